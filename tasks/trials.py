"""One sweep trial, as it runs on a Dask worker: a single-threaded `xgboost.train` with early
stopping on data scattered to the worker once, scored on the valid split.

Workers unpickle this module: it imports XGBoost, NumPy and the metric functions, never Prefect
or MLflow (seconds of imports in every fresh worker). Several trials run side by side in one
worker's threads; XGBoost releases the GIL while it trains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from tasks.metrics import binary_metrics, multiclass_metrics, regression_metrics


@dataclass(frozen=True)
class TrialData:
    """The train and valid splits as model inputs (encoded features, categorical dtypes)."""

    x: pd.DataFrame
    y: pd.Series
    x_valid: pd.DataFrame
    y_valid: pd.Series


def valid_scores(task: str, y: np.ndarray, prediction: np.ndarray, threshold: float) -> dict:
    """Every metric of the task on the valid split (names as in the run's test metrics)."""
    if task == "binary":
        return binary_metrics(y, prediction, threshold)
    if task == "multiclass":
        return multiclass_metrics(y, prediction)
    return regression_metrics(y, prediction)


class StopWhenAsked(xgb.callback.TrainingCallback):
    """Ends training when the sweep sets the Dask event `name` (a cancelled flow run): looked
    up at most once a second, so a trial costs no scheduler round trip per round."""

    def __init__(self, name: str) -> None:
        self.name, self.checked, self.stopped = name, time.monotonic(), False

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        now = time.monotonic()
        if now - self.checked < 1.0:
            return False
        self.checked = now
        from distributed import Event

        self.stopped = Event(self.name).is_set()
        return self.stopped


def run_trial(
    data: TrialData,
    params: dict[str, Any],
    *,
    task: str,
    metric: str,
    num_boost_round: int,
    early_stopping_rounds: int | None,
    threshold: float = 0.5,
    stop_event: str | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Train one configuration with `threads` threads (a sweep's trials: one each); score the
    best round on the valid split.

    Returns:
        `value` (the metric), every valid metric in `scores`, `best_iteration` (0-based),
        `rounds` trained, the per-round valid `curves`, `seconds` (and wall-clock
        `started_at`, `ended_at`), and `stopped` when the sweep
        asked it to stop early (its value is then not comparable).
    """
    started_at, start = time.time(), time.perf_counter()
    dtrain = xgb.QuantileDMatrix(data.x, data.y, enable_categorical=True, nthread=threads)
    dvalid = xgb.QuantileDMatrix(data.x_valid, data.y_valid, ref=dtrain, enable_categorical=True)
    callbacks: list[xgb.callback.TrainingCallback] = []
    if early_stopping_rounds:
        callbacks.append(
            xgb.callback.EarlyStopping(rounds=early_stopping_rounds, data_name="valid")
        )
    stopper = StopWhenAsked(stop_event) if stop_event else None
    if stopper:
        callbacks.append(stopper)
    history: dict[str, Any] = {}
    booster = xgb.train(
        {**params, "nthread": threads},
        dtrain,
        num_boost_round=num_boost_round,
        evals=[(dvalid, "valid")],
        evals_result=history,
        callbacks=callbacks,
        verbose_eval=False,
    )
    curves = {m: [float(v) for v in values] for m, values in history["valid"].items()}
    rounds = len(next(iter(curves.values())))
    best = int(booster.best_iteration) if early_stopping_rounds else rounds - 1
    prediction = booster.predict(dvalid, iteration_range=(0, best + 1))
    scores = valid_scores(task, np.asarray(data.y_valid), prediction, threshold)
    return {
        "value": float(scores[metric]),
        "scores": scores,
        "best_iteration": best,
        "rounds": rounds,
        "curves": curves,
        "seconds": time.perf_counter() - start,
        "started_at": started_at,
        "ended_at": time.time(),
        "stopped": bool(stopper and stopper.stopped),
    }
