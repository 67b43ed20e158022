"""Glassbox from a terminal: `glassbox train|retrain|sweep [PRESET_OR_YAML] [--set key=value ...]`,
`glassbox promote NAME VERSION`, `glassbox rollback NAME`, `glassbox models [NAME]`, the what-if
page `glassbox app`, and the local platform: `glassbox up|down|status`."""

# The program behind `glassbox` (`flows.cli`, which first hands flow commands to the platform's
# warm runner). This docstring is the command's --help.
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows.config import (
    CONF_DIR,
    Preset,
    experiment_name,
    load_config,
    model_name,
    parse_assignment,
    preset_path,
)
from flows.summaries import retrain_summary, sweep_summary, train_summary, versions_text
from tasks import platform, platform_processes
from tasks.config import ConfigError
from tasks.datasets import check_source
from tasks.platform import Ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glassbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train", help="train, evaluate and register a model")
    retrain_cmd = commands.add_parser(
        "retrain",
        help="train a challenger on fresh data; promote it to @champion only if it is better",
    )
    sweep_cmd = commands.add_parser(
        "sweep",
        help="search XGBoost's parameters (trials in parallel, child runs in MLflow); refit "
        "the best and make it @challenger",
    )
    sweep_cmd.add_argument("--trials", type=int, help="trials to run (default: sweep.trials)")
    sweep_cmd.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    sweep_cmd.add_argument(
        "--parallel", type=int, help="trials in flight (default: the cluster's worker threads)"
    )
    for cmd in (train_cmd, retrain_cmd, sweep_cmd):
        cmd.add_argument(
            "config",
            nargs="?",
            default="default",
            help=f"a preset ({', '.join(Preset.__members__)}) or a YAML file (default: default)",
        )
        _set_option(cmd)
    retrain_cmd.add_argument(
        "--dry-run", action="store_true", help="decide and report, but move no alias"
    )
    promote_cmd = commands.add_parser(
        "promote", help="make a version @champion through the gate (or --force)"
    )
    promote_cmd.add_argument("model", help="registered model name, e.g. glassbox-fraud")
    promote_cmd.add_argument("version", help="the version to promote")
    promote_cmd.add_argument(
        "--config",
        help="preset or YAML whose data (test split) and gate judge it (default: the preset "
        "whose model this is)",
    )
    promote_cmd.add_argument(
        "--force", action="store_true", help="skip the gate (the record says so)"
    )
    _set_option(promote_cmd)
    rollback_cmd = commands.add_parser("rollback", help="@champion <- @previous")
    rollback_cmd.add_argument("model", help="registered model name")
    _set_option(rollback_cmd)
    models_cmd = commands.add_parser(
        "models", help="registered models; with NAME: versions, aliases, metrics, decisions"
    )
    models_cmd.add_argument("model", nargs="?", help="registered model name")
    _set_option(models_cmd)
    up_cmd = commands.add_parser(
        "up",
        help="start the local platform: Prefect server and worker, MLflow server, Dask cluster, "
        "deployments (on 127.0.0.1)",
    )
    defaults = Ports()
    up_cmd.add_argument("--prefect-port", type=int, default=defaults.prefect)
    up_cmd.add_argument("--mlflow-port", type=int, default=defaults.mlflow)
    up_cmd.add_argument("--dask-port", type=int, default=defaults.scheduler)
    up_cmd.add_argument("--dashboard-port", type=int, default=defaults.dashboard)
    up_cmd.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Dask worker processes (CPU; default: Dask's split of the cores, 2 cores: 2)",
    )
    up_cmd.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads per Dask worker (default: the cores shared among the workers)",
    )
    up_cmd.add_argument("--no-deploy", action="store_true", help="do not deploy prefect.yaml")
    _set_option(up_cmd)
    app_cmd = commands.add_parser(
        "app", help="a live what-if page for a registered model, on 127.0.0.1"
    )
    app_cmd.add_argument(
        "model",
        nargs="?",
        help="models:/<name>@<alias>, models:/<name>/<version> or an MLflow run id (default: "
        "the preset's model @champion, else its latest version)",
    )
    app_cmd.add_argument(
        "--preset",
        default="default",
        help="the preset (or YAML) whose model and tracking store to use (default: default)",
    )
    app_cmd.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    _set_option(app_cmd)
    commands.add_parser("down", help="stop what `glassbox up` started")
    commands.add_parser("status", help="the local platform's parts, pids and addresses")
    args = parser.parse_args(argv)
    if args.command in ("up", "down", "status"):
        return _platform(args)
    if args.command == "app":
        return _app(args)
    _use_platform()
    try:
        overrides = dict(parse_assignment(text) for text in args.overrides)
        if args.command == "sweep":
            overrides |= {
                f"sweep.{k}": getattr(args, k)
                for k in ("trials", "timeout", "parallel")
                if getattr(args, k) is not None
            }
        if args.command in ("train", "retrain", "sweep"):
            path = preset_path(args.config)
            # A bad config, data source or store fails here, before Prefect starts (seconds
            # sooner).
            cfg = load_config(str(path), overrides)
            _check(cfg)
            if args.command == "sweep":
                from tasks.space import check_sweep

                check_sweep(cfg)
        elif args.command == "promote":
            path = preset_path(args.config) if args.config else _preset_of(args.model)
            _check(load_config(str(path), overrides))
        else:
            path = preset_path("default")
            # While `glassbox up` runs: its store, as the runs use it.
            tracking_cfg = platform.for_run(
                load_config(str(path), overrides), platform.running()
            ).tracking
    except ConfigError as exc:
        print(f"glassbox: {exc}", file=sys.stderr)
        return 2
    if args.command == "train":
        return _train(path, overrides)
    if args.command == "sweep":
        return _sweep(path, overrides)
    if args.command == "models":
        return _models(tracking_cfg, args.model)
    return _lifecycle(args, path, overrides)


def _check(cfg: Any) -> None:
    """The data's header, then the tracking store (a server that does not answer takes
    `STORE_TIMEOUT` seconds to say so, not minutes of retries)."""
    check_source(cfg.data)
    from tasks import tracking
    from tasks.storage import check_writable

    check_writable(cfg.data.workspace)

    tracking.check_store(cfg.tracking, experiment_name(cfg))


INTERRUPTED = "glassbox: interrupted; the MLflow run (if one started) ends KILLED"


@contextmanager
def _prefect_api() -> Iterator[None]:
    """The Prefect API a command reports to: the user's or the platform's, else a temporary
    server of the command's own. Unlike Prefect's temporary server, Ctrl-C does not reach it
    (the interrupted run can still report that it ended) and it dies with the command, even
    after `kill -9`."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from tasks.processes import TEMPORARY_ENV, start_prefect_server

    os.environ.update({"PREFECT_API_URL": start_prefect_server(), TEMPORARY_ENV: "1"})
    try:
        yield
    finally:
        for key in ("PREFECT_API_URL", TEMPORARY_ENV):
            os.environ.pop(key, None)


def _use_platform() -> None:
    """While `glassbox up` runs, talk to its Prefect server (no temporary server per command).
    Set before Prefect is imported; a user's own PREFECT_API_URL wins."""
    state = platform.running()
    if state is not None and "prefect-server" in state.processes:
        os.environ.setdefault("PREFECT_API_URL", state.prefect_api)


def _platform(args: argparse.Namespace) -> int:
    home = platform.home_dir()
    if args.command == "down":
        platform_processes.down(home)
        return 0
    if args.command == "status":
        print("\n".join(platform_processes.status_lines(home)))
        return 0
    try:
        overrides = dict(parse_assignment(text) for text in args.overrides)
        tracking_cfg = load_config("default", overrides).tracking
        store = platform.sqlite_path(tracking_cfg.uri)
        if store is None:
            raise ConfigError(
                f"tracking.uri: `glassbox up` serves a local sqlite store, not {tracking_cfg.uri}"
            )
        for flag in ("prefect_port", "mlflow_port", "dask_port", "dashboard_port"):
            if not 0 < getattr(args, flag) < 65536:
                raise ConfigError(f"--{flag.replace('_', '-')}: not a port number")
        if args.workers < 0 or args.threads < 0:
            raise ConfigError("--workers and --threads must be >= 0 (0: the default)")
    except ConfigError as exc:
        print(f"glassbox: {exc}", file=sys.stderr)
        return 2
    from tasks.cluster import gpu_count

    settings = platform.Settings(
        root=Path.cwd().resolve(),
        home=home,
        store=f"sqlite:///{store}",
        artifact_root=Path(tracking_cfg.artifact_folder).expanduser().resolve(),
        ports=Ports(args.prefect_port, args.mlflow_port, args.dask_port, args.dashboard_port),
        workers=args.workers,
        threads=args.threads,
        gpus=gpu_count(),
    )
    print(f"glassbox platform in {home} (logs: {home / 'logs'})")
    try:
        state = platform_processes.up(settings, deploy=not args.no_deploy)
    except platform.PlatformError as exc:
        print(f"glassbox: {exc}", file=sys.stderr)
        print("glassbox: the parts that started are still up; `glassbox down` stops them")
        return 1
    print(
        "\n".join(
            [
                "",
                f"Prefect UI:  {state.prefect_ui}   (deployments: train, retrain, sweep)",
                f"MLflow UI:   {state.mlflow_url}",
                f"Dask:        {state.scheduler}   dashboard {state.dashboard}",
                "Runs from this folder (`glassbox train`, the Prefect UI) now use them.",
                "Stop: glassbox down",
            ]
        )
    )
    return 0


def _app(args: argparse.Namespace) -> int:
    """Open the model (a bad name or store is one line, before any server starts), then serve
    its page until Ctrl-C."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("glassbox: the app needs gradio: pip install -e '.[app]'", file=sys.stderr)
        return 2
    from whatif.page import open_model, serve

    try:
        overrides = dict(parse_assignment(text) for text in args.overrides)
        cfg = platform.for_run(
            load_config(str(preset_path(args.preset)), overrides), platform.running()
        )
        from tasks import tracking

        tracking.check_store(cfg.tracking)
        opened = open_model(args.model, model_name(cfg), cfg.tracking)
    except ConfigError as exc:
        print(f"glassbox: {exc}", file=sys.stderr)
        return 2
    print(
        f"Glassbox what-if page for {opened.ref.uri}: http://127.0.0.1:{args.port}/ "
        "(Ctrl-C stops it)",
        flush=True,
    )
    serve(opened, args.port)
    return 0


def _set_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted key, e.g. --set train.num_boost_round=50",
    )


def _preset_of(model: str) -> Path:
    """The preset whose registered model is `model` (its data and gate judge a promotion)."""
    for name in Preset.__members__:
        path = preset_path(name)
        cfg = load_config(str(path))
        if model_name(cfg) == model:
            return path
    raise ConfigError(
        f"no preset registers '{model}': pass --config with the data to judge the promotion on"
    )


def _preset_args(path: Path) -> dict[str, Any]:
    preset = path.stem if path.resolve().parent == CONF_DIR else None
    return {
        "preset": Preset(preset) if preset else Preset["default"],
        "config_file": None if preset else str(path.resolve()),
    }


def _lifecycle(args: argparse.Namespace, path: Path, overrides: dict[str, Any]) -> int:
    """retrain, promote, rollback: Prefect flows (visible in the Prefect UI like train)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        with _prefect_api():
            return _run_lifecycle(args, path, overrides)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def _run_lifecycle(args: argparse.Namespace, path: Path, overrides: dict[str, Any]) -> int:
    from flows.retrain import promote, retrain, rollback

    result: Any
    try:
        if args.command == "retrain":
            result = retrain(
                **_preset_args(path),
                mode="dry_run" if args.dry_run else None,
                overrides=overrides,
            )
            print(retrain_summary(result))
        elif args.command == "promote":
            result = promote(
                model=args.model,
                version=str(args.version),
                force=args.force,
                overrides=overrides,
                **_preset_args(path),
            )
            print(f"{result['registered_model']} v{result['version']}: {result['decision']}")
            print("\n".join(f"  - {r}" for r in result["reasons"]))
        else:
            uri = platform.for_run(
                load_config(str(path), overrides), platform.running()
            ).tracking.uri
            result = rollback(model=args.model, tracking_uri=uri)
            print(
                f"{result['registered_model']}: v{result['champion']} is @champion again; "
                f"v{result['previous']} is @previous"
            )
    except ConfigError as exc:
        print(f"glassbox: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"glassbox: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _models(cfg: Any, name: str | None) -> int:
    """`glassbox models [NAME]`: read-only, straight from the registry (no Prefect)."""
    from tasks import tracking

    tracking.configure(cfg)
    if name is None:
        names = tracking.registered_models()
        if not names:
            print(f"no registered models in {cfg.uri}")
        for model in names:
            champ = tracking.alias_version(model, "champion")
            count = len(tracking.model_versions(model))
            print(f"{model}: {count} version(s), @champion {'v' + champ if champ else 'none'}")
        return 0
    if not tracking.model_exists(name):
        print(f"glassbox: no registered model '{name}' in {cfg.uri}", file=sys.stderr)
        return 2
    print(versions_text(name, tracking.model_versions(name), tracking.history(name)))
    return 0


def _train(path: Path, overrides: dict[str, Any]) -> int:
    return _run_flow("train", path, overrides, INTERRUPTED, train_summary)


def _sweep(path: Path, overrides: dict[str, Any]) -> int:
    interrupted = (
        "glassbox: interrupted; the finished trials are kept, the sweep's MLflow run ends KILLED"
    )
    return _run_flow("sweep", path, overrides, interrupted, sweep_summary)


def _run_flow(
    command: str,
    path: Path,
    overrides: dict[str, Any],
    interrupted: str,
    summary: Any,
) -> int:
    """`train` or `sweep`: the flow, its one-line errors and exit codes, then its summary."""
    # The temporary Prefect server's telemetry heartbeat contends for its sqlite file and prints
    # "database is locked" tracebacks; a user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        with _prefect_api():
            # Prefect and MLflow load only for a valid config
            import importlib

            from tasks.gc_tuning import tune

            flow = getattr(importlib.import_module(f"flows.{command}"), command)
            tune()  # this process draws figures too
            result = flow(**_preset_args(path), overrides=overrides)
    except ConfigError as exc:
        print(f"glassbox: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"glassbox: {command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(summary(result, load_config(str(path), overrides).tracking.uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
