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
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import tracking
from tasks.config import Dimension, TaskType
from tasks.space import Direction, distributions, with_sampled

IMPORTANCE_MIN_TRIALS = 10  # parameter importances (fANOVA) are noise below this


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


# --------------------------------------------------------------------------------------------
# Prefect tasks


@task(name="run-trials", cache_policy=NO_CACHE)
def run_trials(
    client: Any,
    data: Any,
    plan: Plan,
    parallel: int,
    on_finished: Callable[[Finished, Finished | None, int], None],
) -> list[Finished]:
    """`search`, as one task in the flow's graph (called in the flow's thread, so that a
    cancellation reaches the loop that stops the trials)."""
    return search(client, data, plan, parallel, on_finished)


@task(name="log-sweep", cache_policy=NO_CACHE)
def log_sweep(
    parent: tracking.RunRef, plan: Plan, finished: list[Finished], best: Finished, seconds: float
) -> None:
    """The parent's best value and trial, counts, the trial table and the figures."""
    from tasks import sweep_figures as figs
    from tasks import tracking

    complete = sum(t.state == "complete" for t in finished)
    tracking.log_metrics(
        parent.run_id,
        {
            f"best_valid_{plan.metric}": float(best.value or 0.0),
            "best_trial": best.number,
            "trials_finished": complete,
            "trials_failed": len(finished) - complete,
            "sweep_seconds": seconds,
            "trials_per_minute": 60 * len(finished) / seconds if seconds else 0.0,
        },
    )
    tracking.log_params(parent.run_id, {f"best.{k}": v for k, v in best.params.items()})
    table = trial_table(finished, plan.space, plan.metric)
    tracking.log_text(parent.run_id, table.to_csv(index=False), "sweep/trials.csv")
    tracking.log_figure(
        parent.run_id,
        figs.optimization_history(table, plan.metric, plan.direction),
        "sweep/optimization_history.png",
    )
    tracking.log_figure(
        parent.run_id,
        figs.parallel_coordinates(table, plan.space, plan.metric, plan.direction),
        "sweep/parallel_coordinates.png",
    )
    tracking.log_figure(
        parent.run_id, figs.slices(table, plan.space, plan.metric), "sweep/slices.png"
    )
    scores = importances(finished, plan)
    if scores:
        # after the `sweep/` curves in MLflow's chart sections (sorted by name)
        tracking.log_metrics(parent.run_id, {f"sweep_importance/{k}": v for k, v in scores.items()})
        tracking.log_figure(
            parent.run_id,
            figs.importance_bars(scores, complete),
            "sweep/param_importances.png",
        )
