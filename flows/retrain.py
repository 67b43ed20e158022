"""The Glassbox `retrain` flow: fresh data → drift check → train a challenger → score champion and
challenger on the same rows → decide → record → report.

The challenger is trained by the same pipeline as `train` (a normal MLflow run with every figure
and explanation) and registered as a new version with `@challenger`. The gate (`tasks.promotion`)
compares it with `models:/<name>@champion` on the challenger's test rows as read, under a lock, and
moves `@champion` (keeping the old one as `@previous`) only when the challenger is better. The
comparison report lands under `comparison/` in the challenger's run; the Prefect run gets a
markdown artifact with the decision, the numbers and the links. `promote` and `rollback` are the
manual counterparts, through the same gate and records.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Annotated, Any

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.config import Preset, model_name
from flows.train import (
    PRESET,
    SOURCE,
    TARGET,
    _config_from_parameters,
    _end_mlflow_run,
    check_and_load,
    train_loaded,
)
from tasks import tracking
from tasks.comparison import (
    Holdout,
    NotComparable,
    Scored,
    compared_metrics,
    log_comparison,
    paired_bootstrap,
    score_model,
    score_versions,
)
from tasks.config import ConfigError, PipelineConfig
from tasks.drift import check_drift
from tasks.promotion import Outcome, record, resolve_rule


class Mode(enum.StrEnum):
    """How the gate's verdict is used."""

    enabled = "enabled"
    dry_run = "dry_run"
    disabled = "disabled"


@flow(name="retrain", on_crashed=[_end_mlflow_run], on_cancellation=[_end_mlflow_run])
def retrain(
    preset: Preset = PRESET,  # type: ignore[valid-type]
    data_source: str | None = SOURCE,
    target: str | None = TARGET,
    batch: Annotated[int | None, Field(ge=0)] = None,
    mode: Mode | None = None,
    overrides: dict[str, Any] | None = None,
    config_file: str | None = None,
) -> dict[str, Any]:
    """Retrain on fresh data and promote the new model only when it beats the champion.

    Args:
        preset: a configuration preset from conf/.
        data_source: `builtin:<name>` or a .csv/.parquet path on the worker (preset's if empty).
        target: the target column (preset's if empty).
        batch: generated data only: the batch to draw (preset's if empty; `date` in overrides
            for one batch per day).
        mode: enabled (promote when better), dry_run (decide, move no alias), disabled
            (train and register only); the preset's if empty.
        overrides: any other config values by dotted key, e.g. {"retrain.min_improvement": 0.01}.
        config_file: a YAML config file on the worker, used instead of the preset.

    Returns:
        The decision, the versions compared, both models' scores and the challenger's run.
    """
    extra = {"data.batch": batch, "retrain.mode": getattr(mode, "value", mode)}
    cfg = _config_from_parameters(
        {
            "preset": preset,
            "data_source": data_source,
            "target": target,
            "overrides": {**(overrides or {}), **{k: v for k, v in extra.items() if v is not None}},
            "config_file": config_file,
        }
    )
    return run_retrain(cfg)


def run_retrain(cfg: PipelineConfig) -> dict[str, Any]:
    """The retrain DAG for one validated configuration."""
    logger = get_run_logger()
    loaded = check_and_load(cfg)
    info = loaded.info
    name = model_name(cfg)
    tracking.configure(cfg.tracking)
    champion_version = tracking.alias_version(name, "champion")
    champion = tracking.load_registered(name, champion_version) if champion_version else None

    drift = None
    if champion is not None and champion.reference is not None:
        data = loaded.data
        drift = check_drift(
            champion.reference,
            data[[c for c in data.columns if c != info.target]],
            data[info.target],
            info.classes,
            cfg.retrain.drift,
            f"{name} v{champion_version}'s training data",
        )
        stable = not drift["summary"].drifted and not drift["summary"].target_drifted
        if cfg.retrain.drift.skip_if_stable and stable:
            return _skipped(name, str(champion_version), drift)

    flow_run = str(runtime.flow_run.id)
    trained = train_loaded(cfg, loaded, {"glassbox.retrain": "challenger"})
    version = trained["model_version"]
    holdout = Holdout.from_loaded(loaded)
    scored = score_versions(name, [version], holdout)
    champion_scored = _score_champion(champion, holdout, scored)

    rule = resolve_rule(cfg.retrain, info.task, _positive_share(loaded))
    blocked = None
    if isinstance(champion_scored, str):
        blocked, champion_scored = champion_scored, None
    elif drift and drift["summary"].drifted_data and cfg.retrain.drift.action == "block":
        blocked = drift["summary"].describe() + " (retrain.drift.action: block)"

    evidence = _evidence(name, version, holdout, scored, rule, cfg.retrain.bootstrap)
    outcome = record(
        name,
        version,
        scored[version].scores,
        (champion_version, *evidence(champion_version))
        if champion_scored and champion_version
        else None,
        rule,
        mode=cfg.retrain.mode,
        score_version=evidence,
        blocked=blocked,
        context={"prefect.flow_run_id": flow_run, "glassbox.run_id": trained["run_id"]},
    )
    judged = scored.get(outcome.champion_version or "") if outcome.champion_scores else None
    names = compared_metrics(info.task, rule.primary, list(rule.guardrails))
    decision = {
        **outcome.decision.to_dict(),
        "champion_version": outcome.champion_version,
        "challenger_version": version,
        "rescored": outcome.rescored,
        "drift": _drift_text(drift, champion),
    }
    figures = log_comparison(
        trained["run_id"], holdout, scored[version], judged, names, decision, drift
    )
    logger.info(
        "%s v%s: %s (%s)",
        name,
        version,
        outcome.decision.verdict,
        "; ".join(outcome.decision.reasons),
    )
    result = {
        "registered_model": name,
        "challenger_version": version,
        "champion_version": outcome.champion_version,
        "decision": outcome.decision.verdict,
        "promoted": outcome.decision.applied,
        "reasons": list(outcome.decision.reasons),
        "primary_metric": rule.primary,
        "challenger": {k: scored[version].scores[k] for k in names if k in scored[version].scores},
        "champion": {k: judged.scores[k] for k in names if k in judged.scores} if judged else None,
        "drift": decision["drift"],
        "run_id": trained["run_id"],
        "url": trained["url"],
        "figures": figures,
    }
    _report(result, cfg)
    return result


def _evidence(
    name: str, challenger: str, holdout: Holdout, scored: dict[str, Scored], rule: Any, n: int
) -> Callable[[str], tuple[dict[str, float], float | None]]:
    """A champion version's scores on the holdout and the challenger's paired-bootstrap win
    rate against it (loading and scoring a version not scored yet: another run may have
    moved `@champion` meanwhile)."""

    def judge(version: str) -> tuple[dict[str, float], float | None]:
        if version not in scored:
            scored[version] = score_model(tracking.load_registered(name, version), holdout)
        old, new = scored[version], scored[challenger]
        if rule.confidence <= 0:
            return old.scores, None
        rate = paired_bootstrap(
            holdout.task,
            rule.primary,
            holdout.y,
            old.output,
            new.output,
            thresholds=(old.threshold, new.threshold),
            n=n,
        )
        return old.scores, rate

    return judge


def _drift_text(drift: dict[str, Any] | None, champion: tracking.LoadedModel | None) -> str:
    if drift is not None:
        return str(drift["summary"].describe())
    if champion is None:
        return "not checked: no champion to compare with"
    return f"not checked: champion v{champion.version} carries no summary of its training data"


def _score_champion(
    champion: tracking.LoadedModel | None, holdout: Holdout, scored: dict[str, Scored]
) -> Scored | str | None:
    """The champion's scores on the holdout, or why it cannot be compared."""
    if champion is None:
        return None
    try:
        scored[champion.version] = score_model(champion, holdout)
    except (NotComparable, ConfigError) as exc:
        return f"cannot compare with champion v{champion.version}: {exc}; promote by hand"
    return scored[champion.version]


def _positive_share(loaded: Any) -> float | None:
    if loaded.info.task != "binary":
        return None
    return float(loaded.parts["train"][loaded.info.target].mean())


def _skipped(name: str, champion: str, drift: dict[str, Any]) -> dict[str, Any]:
    text = (
        f"## Retrain of **{name}** skipped\n\nNo feature drifted against champion v{champion}'s "
        f"training data ({drift['summary'].describe()}); `retrain.drift.skip_if_stable` is on."
    )
    create_markdown_artifact(key="retrain-decision", markdown=text, description="retrain decision")
    get_run_logger().info("Skipped: %s", drift["summary"].describe())
    return {
        "registered_model": name,
        "decision": "skipped (no drift)",
        "promoted": False,
        "champion_version": champion,
        "drift": drift["summary"].describe(),
    }


def _report(result: dict[str, Any], cfg: PipelineConfig) -> None:
    """The Prefect run's markdown artifact: decision, numbers, links."""
    name, version = result["registered_model"], result["challenger_version"]
    champ = result["champion_version"]
    lines = [
        f"## {name}: {result['decision']}",
        "",
        f"Challenger **v{version}** vs champion **{'v' + champ if champ else 'none'}** on the "
        f"challenger's test rows; primary metric `{result['primary_metric']}`.",
        "",
        *[f"- {r}" for r in result["reasons"]],
        f"- drift: {result['drift']}",
        "",
        "| metric | champion | challenger | delta |",
        "|---|---|---|---|",
    ]
    for metric, new in result["challenger"].items():
        old = (result["champion"] or {}).get(metric)
        delta = f"{new - old:+.4g}" if old is not None else ""
        lines.append(f"| {metric} | {'' if old is None else f'{old:.4g}'} | {new:.4g} | {delta} |")
    if result["url"]:
        models = result["url"].split("/#/")[0] + f"/#/models/{name}"
        lines[2] += f" [Model versions in MLflow]({models})."
    where = (
        f"[the challenger's MLflow run]({result['url']})"
        if result["url"]
        else f"MLflow run `{result['run_id']}`"
    )
    lines += [
        "",
        f"Report: `comparison/` in {where} (metrics, curves, mean |SHAP| side by side, drift).",
        f"Aliases now: {_aliases(name)}",
    ]
    create_markdown_artifact(
        key="retrain-decision", markdown="\n".join(lines), description="retrain decision"
    )


def _aliases(name: str) -> str:
    found = {a: tracking.alias_version(name, a) for a in ("champion", "challenger", "previous")}
    return ", ".join(f"@{a} = v{v}" for a, v in found.items() if v) or "none"


@flow(name="promote")
def promote(
    model: str,
    version: str,
    preset: Preset = Preset.default,  # type: ignore[valid-type, attr-defined]
    force: bool = False,
    overrides: dict[str, Any] | None = None,
    config_file: str | None = None,
) -> dict[str, Any]:
    """Promote a registered version to `@champion` through the retraining gate: both models
    scored on the test rows of the configured data as read now; `force` skips the gate (and
    the record says so).

    Args:
        model: the registered model's name.
        version: the version to promote.
        preset: the configuration whose data (test split) and gate judge the promotion.
        force: promote whatever the gate says.
        overrides: other config values by dotted key.
        config_file: a YAML config file on the worker, used instead of the preset.
    """
    cfg = _config_from_parameters(
        {"preset": preset, "overrides": overrides, "config_file": config_file}
    )
    tracking.configure(cfg.tracking)
    if not tracking.model_exists(model, version):
        raise ConfigError(f"no version {version} of registered model '{model}'")
    loaded = check_and_load(cfg)
    holdout = Holdout.from_loaded(loaded)
    scored = score_versions(model, [version], holdout)

    rule = resolve_rule(cfg.retrain, loaded.info.task, _positive_share(loaded))
    evidence = _evidence(model, version, holdout, scored, rule, cfg.retrain.bootstrap)
    outcome: Outcome = record(
        model,
        version,
        scored[version].scores,
        None,
        rule,
        mode="enabled",
        score_version=evidence,
        force=force,
        context={"prefect.flow_run_id": str(runtime.flow_run.id), "glassbox.action": "promote"},
    )
    get_run_logger().info(
        "%s v%s: %s (%s)",
        model,
        version,
        outcome.decision.verdict,
        "; ".join(outcome.decision.reasons),
    )
    return {
        "registered_model": model,
        "version": version,
        "champion_version": outcome.champion_version,
        "decision": outcome.decision.verdict,
        "promoted": outcome.decision.applied,
        "reasons": list(outcome.decision.reasons),
    }


@flow(name="rollback")
def rollback(model: str, tracking_uri: str | None = None) -> dict[str, str]:
    """`@champion` <- `@previous` (the demoted champion becomes `@previous`)."""
    from tasks.config import TrackingConfig
    from tasks.promotion import roll_back

    tracking.configure(TrackingConfig(uri=tracking_uri) if tracking_uri else TrackingConfig())
    if not tracking.model_exists(model):
        raise ConfigError(f"no registered model '{model}'")
    try:
        champion, demoted = roll_back(model, {"prefect.flow_run_id": str(runtime.flow_run.id)})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    get_run_logger().info("%s: v%s is champion again; v%s is @previous", model, champion, demoted)
    return {"registered_model": model, "champion": champion, "previous": demoted}
