"""`glassbox train [PRESET_OR_YAML] [--set key=value ...]`: the train flow from a terminal."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from flows.config import CONF_DIR, Preset, load_config, parse_assignment, preset_path
from tasks.config import ConfigError
from tasks.datasets import check_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glassbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train", help="train, evaluate and register a model")
    train_cmd.add_argument(
        "config",
        nargs="?",
        default="default",
        help=f"a preset ({', '.join(Preset.__members__)}) or a YAML file (default: default)",
    )
    train_cmd.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted key, e.g. --set train.num_boost_round=50",
    )
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_assignment(text) for text in args.overrides)
        path = preset_path(args.config)
        # A bad config or data source fails here, before Prefect starts (seconds sooner).
        check_source(load_config(str(path), overrides).data)
    except ConfigError as exc:
        print(f"glassbox: {exc}", file=sys.stderr)
        return 2
    return _train(path, overrides)


def _train(path: Path, overrides: dict[str, Any]) -> int:
    # The temporary Prefect server's telemetry heartbeat contends for its sqlite file and prints
    # "database is locked" tracebacks; a user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.train import train  # Prefect and MLflow load only for a valid config

    _hide_tracebacks_of_user_errors()
    preset = path.stem if path.resolve().parent == CONF_DIR else None
    try:
        result = train(
            preset=Preset(preset) if preset else Preset["default"],
            config_file=None if preset else str(path.resolve()),
            overrides=overrides,
        )
    except ConfigError as exc:
        print(f"glassbox: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"glassbox: train failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(_summary(result, load_config(str(path), overrides).tracking.uri))
    return 0


def _summary(result: dict[str, Any], uri: str) -> str:
    lines = [
        "",
        f"MLflow run: {result['run_id']} (experiment {result['experiment_id']})",
        f"Model: models:/{result['registered_model']}/{result['model_version']}"
        " (mlflow.pyfunc.load_model takes it; predict_method=predict_proba for probabilities)",
        "Test: " + ", ".join(f"{k} {v:.4f}" for k, v in result["headline"].items()),
    ]
    exp = result["experiment_id"]
    if result["url"]:
        base = result["url"].split("/#/")[0]
        lines.append(f"Look at it: {result['url']}")
    else:
        base = "http://127.0.0.1:5000"
        lines += [
            f"Look at it: mlflow ui --backend-store-uri {uri} --port 5000, then open",
            f"  {base}/#/experiments/{exp}/runs/{result['run_id']}",
        ]
    lines.append(f"Compare runs: {base}/#/experiments/{exp}/runs?workflowType=machine_learning")
    return "\n".join(lines)


class _NoUserErrorTraceback(logging.Filter):
    """A bad input is reported in one line by the CLI; Prefect need not print its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConfigError):
            record.exc_info = None
            record.exc_text = None
        return True


def _hide_tracebacks_of_user_errors() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_NoUserErrorTraceback())


if __name__ == "__main__":
    sys.exit(main())
