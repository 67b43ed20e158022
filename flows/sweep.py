"""The Glassbox `sweep` flow: check → load → trials in parallel on the Dask cluster (Optuna's
TPE, ask/tell) → the trial table and figures → refit the best → register it as `@challenger`.

One MLflow parent run per sweep (named after the flow run) with one child run per trial
(`mlflow.parentRunId`): the trial's sampled XGBoost parameters, its valid metrics and its
per-round valid curve. Only this process writes to MLflow. The best configuration is trained
again by the `train` pipeline as a normal run (every figure and explanation), nested under the
parent, registered and given `@challenger`; promotion stays with the gate (`glassbox promote`).
Cancelling the flow run (or Ctrl-C) stops the trials in flight and keeps the finished ones.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.config import Preset, experiment_name, preset_values
from flows.train import (
    PRESET,
    SOURCE,
    TARGET,
    _config_from_parameters,
    _end_mlflow_run,
    _prefect_link,
    check_and_load,
    train_loaded,
)
from tasks import tracking
from tasks.cluster import dask_cluster
from tasks.config import PipelineConfig, validate_config
from tasks.data import Loaded
from tasks.datasets import dataset_name
from tasks.space import check_space, check_sweep, resolve_metric, resolve_space, with_sampled
from tasks.sweep import Finished, Plan, best_trial, log_sweep, run_trials
from tasks.train import xgb_params

ROLE_TAG = "glassbox.sweep.role"  # parent, trial or refit
TRIAL_TAG = "glassbox.trial"


@flow(name="sweep", on_crashed=[_end_mlflow_run], on_cancellation=[_end_mlflow_run])
def sweep(
    preset: Preset = PRESET,  # type: ignore[valid-type]
    trials: Annotated[int | None, Field(ge=1, le=10_000)] = Field(
        None, description=f"trials to run. Empty: the preset's ({preset_values('sweep.trials')})."
    ),
    timeout: Annotated[float | None, Field(gt=0)] = Field(
        None,
        description="seconds after which no new trial starts (running ones finish). "
        "Empty: no limit.",
    ),
    parallel: Annotated[int | None, Field(ge=1, le=1024)] = Field(
        None, description="trials in flight at once. Empty: the cluster's worker threads."
    ),
    data_source: str | None = SOURCE,
    target: str | None = TARGET,
    overrides: dict[str, Any] | None = None,
    config_file: str | None = None,
) -> dict[str, Any]:
    """Search XGBoost's parameters; refit the best as a normal run and make it `@challenger`.

    Args:
        preset: a configuration preset from conf/; its `sweep:` section holds the space.
        trials: trials to run (preset's if empty).
        timeout: seconds after which no new trial starts (no limit if empty).
        parallel: trials in flight at once (the cluster's worker threads if empty).
        data_source: `builtin:<name>` or a .csv/.parquet path on the worker (preset's if empty).
        target: the target column (preset's if empty).
        overrides: any other config values by dotted key, e.g. {"sweep.metric": "roc_auc"}.
        config_file: a YAML config file on the worker (its `sweep.space` too), used instead of
            the preset.

    Returns:
        The parent run, the best trial and value, and the refit's run and registered version.
    """
    named = {"sweep.trials": trials, "sweep.timeout": timeout, "sweep.parallel": parallel}
    cfg = _config_from_parameters(
        {
            "preset": preset,
            "data_source": data_source,
            "target": target,
            "overrides": {**(overrides or {}), **{k: v for k, v in named.items() if v is not None}},
            "config_file": config_file,
        }
    )
    return run_sweep(cfg)


def plan_sweep(cfg: PipelineConfig, loaded: Loaded, device: str = "cpu") -> Plan:
    """The search resolved for the data: the task's space and metric, checked.

    Raises:
        ConfigError: a parameter XGBoost refuses, or a metric that does not fit the task.
    """
    info = loaded.info
    share = None
    if info.task == "binary":
        share = float(loaded.parts["train"][info.target].mean())
    metric, direction = resolve_metric(cfg.sweep.metric, info.task, share)
    space = resolve_space(cfg.sweep, info.task)
    check_space(space, cfg.train.params)
    base = xgb_params(
        info.task,
        len(info.classes),
        cfg.train.params,
        device=device,
        eval_auc=cfg.train.eval_auc,
        positive_share=share,
        auto_scale_pos_weight=cfg.train.auto_scale_pos_weight,
    )
    return Plan(
        task=info.task,
        metric=metric,
        direction=direction,
        space=space,
        base_params=base,
        trials=cfg.sweep.trials,
        timeout=cfg.sweep.timeout,
        seed=cfg.sweep.seed,
        num_boost_round=cfg.train.num_boost_round,
        early_stopping_rounds=cfg.train.early_stopping_rounds,
        threshold=cfg.evaluate.threshold,
    )


def run_sweep(cfg: PipelineConfig) -> dict[str, Any]:
    """The sweep DAG for one validated configuration."""
    logger = get_run_logger()
    check_sweep(cfg)
    loaded = check_and_load(cfg)
    plan = plan_sweep(cfg, loaded)  # a wrong metric or parameter fails here, before any run
    flow_run = str(runtime.flow_run.id)
    name = cfg.tracking.run_name or str(runtime.flow_run.name)
    tracking.configure(cfg.tracking)
    for orphan in tracking.end_orphaned_runs():
        logger.warning("MLflow run %s was left RUNNING by a dead process: FAILED", orphan)
    tags = {
        tracking.PREFECT_RUN_TAG: flow_run,
        "prefect.flow_run_name": str(runtime.flow_run.name),
        "prefect.deployment": str(runtime.deployment.name or ""),
        "glassbox.data": dataset_name(cfg.data.source),
        ROLE_TAG: "parent",
        **_prefect_link(),
    }
    with tracking.mlflow_run(
        cfg.tracking, experiment=experiment_name(cfg), run_name=name, tags=tags
    ) as parent:
        tracking.log_params(parent.run_id, _parent_params(cfg, plan))
        with dask_cluster(cfg.cluster) as cluster:
            if cluster.note:
                get_run_logger().warning(cluster.note)
            threads = sum(
                w["nthreads"] for w in cluster.client.scheduler_info()["workers"].values()
            )
            parallel = min(cfg.sweep.parallel or threads, plan.trials)
            if cluster.device != "cpu":
                plan = plan_sweep(cfg, loaded, cluster.device)
            tracking.log_params(parent.run_id, {"sweep.parallel_resolved": parallel})
            logger.info(
                "Sweep: %d trials, %d in flight on %d worker thread(s), valid %s (%s), "
                "parameters: %s",
                plan.trials,
                parallel,
                threads,
                plan.metric,
                plan.direction,
                ", ".join(f"{k} {d.describe()}" for k, d in plan.space.items()),
            )
            start = time.perf_counter()
            data = cluster.client.scatter(_trial_data(loaded), broadcast=True, hash=False)
            finished = run_trials(
                cluster.client, data, plan, parallel, _trial_logger(parent, plan, flow_run)
            )
            seconds = time.perf_counter() - start
        best = best_trial(finished, plan.direction)
        if best is None:
            raise RuntimeError(
                f"no trial finished: {finished[0].error if finished else 'none started'}"
            )
        log_sweep(parent, plan, finished, best, seconds)
        result: dict[str, Any] = {
            "run_id": parent.run_id,
            "experiment_id": parent.experiment_id,
            "url": parent.url,
            "metric": plan.metric,
            "direction": plan.direction,
            "trials_finished": sum(t.state == "complete" for t in finished),
            "trials_failed": sum(t.state == "failed" for t in finished),
            "best_trial": best.number,
            "best_value": best.value,
            "best_params": best.params,
            "seconds": seconds,
            "refit": None,
        }
        if cfg.sweep.refit:
            result["refit"] = _refit(cfg, loaded, parent, best, name)
        _report(result, plan, finished, parent)
    return result


def _trial_data(loaded: Loaded) -> Any:
    from tasks.trials import TrialData

    info = loaded.info
    train, valid = loaded.parts["train"], loaded.parts["valid"]
    dtypes = info.feature_dtypes()
    return TrialData(
        train[info.features].astype(dtypes) if dtypes else train[info.features],
        train[info.target],
        valid[info.features].astype(dtypes) if dtypes else valid[info.features],
        valid[info.target],
    )


def _parent_params(cfg: PipelineConfig, plan: Plan) -> dict[str, Any]:
    """The configuration as every run logs it, the space as the search used it (`int 2..10`)."""
    flat = tracking.flatten(cfg.model_dump(mode="json", exclude={"sweep": {"space"}}))
    return {
        **flat,
        **{f"sweep.space.{k}": d.describe() for k, d in plan.space.items()},
        "sweep.metric_resolved": plan.metric,
        "sweep.direction": plan.direction,
    }


def _trial_logger(parent: tracking.RunRef, plan: Plan, flow_run: str) -> Any:
    """Each finished trial: a child run, two points on the parent's `sweep/` curves and a line
    in the Prefect log."""
    logger = get_run_logger()
    metric = plan.metric

    def on_finished(one: Finished, best: Finished | None, left: int) -> None:
        params = with_sampled(plan.base_params, one.params)
        metrics: dict[str, float] = {}
        if one.result:
            metrics = {f"valid_{k}": v for k, v in one.result["scores"].items()}
            metrics |= {
                "best_iteration": one.result["best_iteration"],
                "rounds_trained": one.result["rounds"],
                "trial_seconds": one.result["seconds"],
            }
        one.run_id = tracking.log_child_run(
            parent,
            name=f"trial-{one.number:03d}",
            params={f"xgb.{k}": v for k, v in params.items()},
            metrics=metrics,
            curves={f"valid-{m}": v for m, v in one.result.get("curves", {}).items()},
            tags={
                ROLE_TAG: "trial",
                TRIAL_TAG: str(one.number),
                tracking.PREFECT_RUN_TAG: flow_run,
            },
            failure=one.error,
            span=(one.result["started_at"], one.result["ended_at"]) if one.result else None,
        )
        points: dict[str, float] = {}
        if best and best.value is not None:
            points[f"sweep/best_valid_{metric}"] = best.value
        if one.value is not None:
            points[f"sweep/valid_{metric}"] = one.value
        if points:
            tracking.log_metrics(parent.run_id, points, step=one.number)
        if one.state == "failed":
            logger.warning("trial %d failed: %s; %d left", one.number, one.error, left)
            return
        logger.info(
            "trial %d: valid %s %.5g (%d rounds, %.1f s); best %.5g (trial %d); %d left",
            one.number,
            metric,
            one.value,
            one.result["rounds"],
            one.result["seconds"],
            best.value if best else float("nan"),
            best.number if best else 0,
            left,
        )

    return on_finished


def _refit(
    cfg: PipelineConfig, loaded: Loaded, parent: tracking.RunRef, best: Finished, name: str
) -> dict[str, Any]:
    """The best configuration trained by the train pipeline (nested under the sweep),
    registered, and given `@challenger`."""
    raw = cfg.model_dump(mode="json")
    raw["train"]["params"] = with_sampled(raw["train"]["params"], best.params)
    raw["tracking"]["run_name"] = f"{name}-best"
    best_cfg = validate_config(raw)
    trained = train_loaded(
        best_cfg,
        loaded,
        {
            tracking.PARENT_TAG: parent.run_id,
            ROLE_TAG: "refit",
            "glassbox.sweep.best_trial": str(best.number),
        },
    )
    registered, version = trained["registered_model"], trained["model_version"]
    tracking.set_alias(registered, "challenger", version)
    tracking.set_version_tags(
        registered,
        version,
        {
            "glassbox.sweep.parent_run_id": parent.run_id,
            "glassbox.sweep.best_trial": str(best.number),
            "glassbox.decision": "challenger from a sweep (not judged; glassbox promote)",
        },
    )
    tracking.set_tags(
        parent.run_id,
        {
            "glassbox.sweep.refit_run_id": trained["run_id"],
            "glassbox.sweep.model_version": f"{registered}/{version}",
        },
    )
    get_run_logger().info(
        "Refit of trial %d: MLflow run %s, %s version %s is @challenger",
        best.number,
        trained["run_id"],
        registered,
        version,
    )
    return trained


def _run_url(parent: tracking.RunRef, run_id: str | None) -> str | None:
    if not parent.url or not run_id:
        return None
    return parent.url.rsplit("/", 1)[0] + f"/{run_id}"


def _report(
    result: dict[str, Any], plan: Plan, finished: list[Finished], parent: tracking.RunRef
) -> None:
    """The Prefect run's markdown artifact: the leaderboard (top 10) and links."""
    metric, refit = plan.metric, result["refit"]
    where = f"[the sweep's MLflow run]({parent.url})" if parent.url else f"`{parent.run_id}`"
    lines = [
        f"## Sweep: best valid {metric} {result['best_value']:.5g} (trial {result['best_trial']})",
        "",
        f"{result['trials_finished']} trials finished, {result['trials_failed']} failed, in "
        f"{result['seconds']:.0f} s; parent run {where} (trial table and figures under "
        "`sweep/`; the trials are its child runs).",
    ]
    if refit:
        run = f"[{refit['run_id']}]({refit['url']})" if refit["url"] else f"`{refit['run_id']}`"
        lines += [
            "",
            f"Refit of the best: run {run}, **{refit['registered_model']}** version "
            f"{refit['model_version']} is `@challenger`; `glassbox promote "
            f"{refit['registered_model']} {refit['model_version']}` judges it against the "
            "champion.",
        ]
    names = list(plan.space)
    lines += [
        "",
        "| rank | trial | valid " + metric + " | " + " | ".join(names) + " | rounds |",
        "|---" * (len(names) + 4) + "|",
    ]
    ranked = sorted(
        (t for t in finished if t.state == "complete"),
        key=lambda t: (-(t.value or 0) if plan.direction == "maximize" else t.value or 0, t.number),
    )
    for rank, t in enumerate(ranked[:10], 1):
        url = _run_url(parent, t.run_id)
        label = f"[{t.number}]({url})" if url else str(t.number)
        values = " | ".join(_fmt(t.params.get(n)) for n in names)
        lines.append(f"| {rank} | {label} | {t.value:.5g} | {values} | {t.result['rounds']} |")
    create_markdown_artifact(
        key="sweep-leaderboard", markdown="\n".join(lines), description="sweep leaderboard"
    )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
