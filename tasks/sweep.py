"""Hyperparameter sweeps: the search space, the metric, Optuna's TPE driven by ask/tell with at
most `parallel` trials in flight on the Dask cluster, and the trial table.

Each trial is one single-threaded `xgboost.train` (`tasks.trials.run_trial`) on data scattered to
the workers once; `xgboost.dask` is not used per trial because it locks every worker for one
training (trials would run one after another). Pure functions on top; `search` drives a cluster
and reports each finished trial through a callback, so that only the flow's process writes to
MLflow.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from tasks.config import ConfigError, Dimension, SweepConfig, TaskType
from tasks.promotion import LOWER_IS_BETTER, primary_metric

Direction = Literal["maximize", "minimize"]


def _dims(raw: dict[str, dict[str, Any]]) -> dict[str, Dimension]:
    return {name: Dimension(**spec) for name, spec in raw.items()}


_CLASSIFIER_SPACE = {
    "max_depth": {"type": "int", "low": 2, "high": 10},
    "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
    # Classification hessians are p(1-p): small weights keep leaves for rare classes possible.
    "min_child_weight": {"type": "float", "low": 0.1, "high": 20, "log": True},
    "subsample": {"type": "float", "low": 0.5, "high": 1.0},
    "colsample_bytree": {"type": "float", "low": 0.5, "high": 1.0},
    "reg_lambda": {"type": "float", "low": 0.001, "high": 10, "log": True},
    "reg_alpha": {"type": "float", "low": 0.001, "high": 10, "log": True},
}
# The default space per task: the parameters that move gradient-boosted trees most, with ranges
# from XGBoost's tuning guide.
DEFAULT_SPACE: dict[TaskType, dict[str, Dimension]] = {
    "binary": _dims(_CLASSIFIER_SPACE),
    "multiclass": _dims(_CLASSIFIER_SPACE),
    "regression": _dims(
        {
            **_CLASSIFIER_SPACE,
            # squared error's hessian is 1 a row: min_child_weight counts rows here
            "min_child_weight": {"type": "float", "low": 1, "high": 50, "log": True},
        }
    ),
}
# Valid-split metrics a sweep can optimise, per task (names as in the runs' test metrics).
METRICS: dict[TaskType, tuple[str, ...]] = {
    "binary": (
        "average_precision",
        "roc_auc",
        "log_loss",
        "brier_score",
        "f1_score",
        "accuracy_score",
        "balanced_accuracy_score",
        "matthews_corrcoef",
    ),
    "multiclass": (
        "log_loss",
        "accuracy_score",
        "balanced_accuracy_score",
        "f1_macro",
        "roc_auc_macro",
    ),
    "regression": ("root_mean_squared_error", "mean_absolute_error", "r2_score"),
}
# Parameters a sweep must not vary: the task decides them.
_FIXED = {"objective": "the task", "eval_metric": "the task (early stopping uses it)"}
# XGBoost's parameter aliases: a sampled `eta` must replace a configured `learning_rate`.
ALIASES = (
    {"eta", "learning_rate"},
    {"lambda", "reg_lambda"},
    {"alpha", "reg_alpha"},
    {"gamma", "min_split_loss"},
    {"seed", "random_state"},
)
IMPORTANCE_MIN_TRIALS = 10  # parameter importances (fANOVA) are noise below this


def with_sampled(params: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """`params` with the sampled values in, a configured alias of a sampled name taken out
    (XGBoost would otherwise get both `learning_rate` and `eta`, and one would silently win)."""
    covered = set(sampled)
    for group in ALIASES:
        if group & covered:
            covered |= group
    return {**{k: v for k, v in params.items() if k not in covered}, **sampled}


def resolve_space(cfg: SweepConfig, task: TaskType) -> dict[str, Dimension]:
    """The configured space, or the task's default."""
    return dict(cfg.space) if cfg.space is not None else dict(DEFAULT_SPACE[task])


def check_space(space: dict[str, Dimension], train_params: dict[str, Any]) -> None:
    """Ask XGBoost whether it knows every parameter of the space and takes both ends of each
    range and every choice, before any trial runs.

    Raises:
        ConfigError: naming the parameter (`sweep.space.<name>`) and the problem.
    """
    from tasks.train import check_params

    if not space:
        raise ConfigError("sweep.space: empty; name at least one XGBoost parameter to vary")
    for name, why in _FIXED.items():
        if name in space:
            raise ConfigError(f"sweep.space.{name}: set from {why}, not searched")
    for group in ALIASES:
        if len(group & set(space)) > 1:
            raise ConfigError(f"sweep.space: {' and '.join(sorted(group))} are one parameter")
    for name, dim in space.items():
        for value in dim.values or (_end(dim, 0), _end(dim, 1)):
            check_params(with_sampled(train_params, {name: value}), f"sweep.space.{name}")
    # parameters that exclude each other
    for which in (0, 1):
        sampled = {k: _end(d, which) for k, d in space.items()}
        check_params(with_sampled(train_params, sampled), "sweep.space")


def _end(dim: Dimension, which: int) -> Any:
    if dim.values:
        return dim.values[which % len(dim.values)]
    value = dim.low if which == 0 else dim.high
    return int(value) if dim.type == "int" else value  # type: ignore[arg-type]


def resolve_metric(
    metric: str, task: TaskType, positive_share: float | None
) -> tuple[str, Direction]:
    """The metric to optimise and its direction; `auto` is the retraining gate's primary metric.

    Raises:
        ConfigError: the metric does not fit the task.
    """
    name = primary_metric(task, positive_share) if metric == "auto" else metric
    if name not in METRICS[task]:
        raise ConfigError(
            f"sweep.metric: '{name}' does not fit the task '{task}' (metrics for {task}: "
            f"{', '.join(METRICS[task])})"
        )
    return name, "minimize" if name in LOWER_IS_BETTER else "maximize"


def distributions(space: dict[str, Dimension]) -> dict[str, Any]:
    """Optuna's distributions for the space."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for name, d in space.items():
        if d.type == "choice":
            out[name] = CategoricalDistribution(list(d.values or ()))
        elif d.type == "int":
            out[name] = IntDistribution(int(d.low), int(d.high), log=d.log)  # type: ignore[arg-type]
        else:
            out[name] = FloatDistribution(d.low, d.high, log=d.log)  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class Plan:
    """Everything the search needs, resolved and checked."""

    task: TaskType
    metric: str
    direction: Direction
    space: dict[str, Dimension]
    base_params: dict[str, Any]  # what every trial trains with, before the sampled parameters
    trials: int
    timeout: float | None
    seed: int
    num_boost_round: int
    early_stopping_rounds: int | None
    threshold: float


@dataclass
class Finished:
    """One trial as the search saw it end."""

    number: int  # 1-based, in the order trials were started
    params: dict[str, Any]
    state: Literal["complete", "failed"]
    value: float | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    run_id: str | None = None


def better(direction: Direction, new: float, old: float | None) -> bool:
    return old is None or (new > old if direction == "maximize" else new < old)


def best_trial(finished: list[Finished], direction: Direction) -> Finished | None:
    """The best complete trial; the earliest one among equals."""
    best: Finished | None = None
    for t in sorted(finished, key=lambda t: t.number):
        if t.value is not None and better(direction, t.value, best.value if best else None):
            best = t
    return best


def trial_table(finished: list[Finished], space: dict[str, Dimension], metric: str) -> pd.DataFrame:
    """One row per trial, by number: state, value, the sampled parameters, rounds, seconds."""
    rows = [
        {
            "trial": t.number,
            "state": t.state,
            f"valid_{metric}": t.value,
            **{name: t.params.get(name) for name in space},
            "best_iteration": t.result.get("best_iteration"),
            "rounds": t.result.get("rounds"),
            "seconds": t.result.get("seconds"),
            "run_id": t.run_id,
            "error": t.error,
        }
        for t in sorted(finished, key=lambda t: t.number)
    ]
    return pd.DataFrame(rows)


def best_so_far(values: list[float | None], direction: Direction) -> list[float | None]:
    """The running best of trial values (failed trials are None and keep the best)."""
    out: list[float | None] = []
    best: float | None = None
    for v in values:
        if v is not None and not math.isnan(v) and better(direction, v, best):
            best = v
        out.append(best)
    return out


def importances(finished: list[Finished], plan: Plan) -> dict[str, float] | None:
    """fANOVA importance of each parameter for the metric (Optuna's evaluator, seeded), once
    there are `IMPORTANCE_MIN_TRIALS` complete trials; None before."""
    complete = [t for t in finished if t.state == "complete"]
    if len(complete) < IMPORTANCE_MIN_TRIALS or len(plan.space) < 2:
        return None
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    dists = distributions(plan.space)
    study = optuna.create_study(direction=plan.direction)
    for t in complete:
        study.add_trial(
            optuna.trial.create_trial(
                params={k: t.params[k] for k in dists}, distributions=dists, value=t.value
            )
        )
    scores = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=plan.seed))
    return {k: float(v) for k, v in scores.items()}


def search(
    client: Any,
    data: Any,
    plan: Plan,
    parallel: int,
    on_finished: Callable[[Finished, Finished | None, int], None],
) -> list[Finished]:
    """Run the trials on the cluster: ask Optuna's TPE for a configuration whenever fewer than
    `parallel` trials are in flight, tell it each result as it arrives.

    Args:
        client: Dask client of the cluster.
        data: a future of the scattered `tasks.trials.TrialData`.
        on_finished: called in this thread with each finished trial, the best so far and the
            trials not yet finished.

    Returns:
        Every finished trial. Interrupted (Ctrl-C, a cancelled flow run), the trials in flight
        are asked to stop and cancelled; the finished ones were reported already.
    """
    import optuna
    from distributed import Event
    from distributed import wait as dask_wait

    from tasks.trials import run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=plan.seed,
        multivariate=True,
        # In flight trials count as bad guesses, so parallel asks do not pile up in one spot.
        constant_liar=parallel > 1,
        n_startup_trials=min(10, max(2, plan.trials // 3)),
    )
    study = optuna.create_study(direction=plan.direction, sampler=sampler)
    dists = distributions(plan.space)
    stop = f"glassbox-sweep-stop-{uuid.uuid4().hex}"
    running: dict[Any, tuple[Any, int, dict[str, Any]]] = {}
    finished: list[Finished] = []
    best: Finished | None = None
    deadline = time.monotonic() + plan.timeout if plan.timeout else math.inf
    started = 0
    try:
        while True:
            while len(running) < parallel and started < plan.trials and time.monotonic() < deadline:
                trial = study.ask(dists)
                started += 1
                params = with_sampled(plan.base_params, trial.params)
                future = client.submit(
                    run_trial,
                    data,
                    params,
                    task=plan.task,
                    metric=plan.metric,
                    num_boost_round=plan.num_boost_round,
                    early_stopping_rounds=plan.early_stopping_rounds,
                    threshold=plan.threshold,
                    stop_event=stop,
                    key=f"glassbox-trial-{started}-{stop[-8:]}",
                    pure=False,
                )
                running[future] = (trial, started, dict(trial.params))
            if not running:
                break
            try:
                done, _ = dask_wait(list(running), timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for future in sorted(done, key=lambda f: running[f][1]):
                trial, number, params = running.pop(future)
                one = _finish(study, trial, number, params, future)
                finished.append(one)
                if one.value is not None and better(
                    plan.direction, one.value, best.value if best else None
                ):
                    best = one
                left = plan.trials - len(finished)
                if time.monotonic() >= deadline:
                    left = len(running)
                on_finished(one, best, left)
    finally:
        if running:
            Event(stop, client=client).set()
            client.cancel(list(running))
    return finished


def _finish(study: Any, trial: Any, number: int, params: dict[str, Any], future: Any) -> Finished:
    import optuna

    try:
        result = future.result()
    except Exception as exc:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        first = (str(exc).strip().splitlines() or [""])[0]
        return Finished(number, params, "failed", error=f"{type(exc).__name__}: {first}"[:500])
    value = result["value"]
    if value is None or math.isnan(value):
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return Finished(number, params, "failed", result=result, error="the metric is NaN")
    study.tell(trial, value)
    return Finished(number, params, "complete", value, result)
