"""The evaluation's figures: which fit the task and the data, and each drawn to PNG bytes on a
Dask worker (`render`). Workers unpickle this module: it imports matplotlib, seaborn and
scikit-learn, never Prefect or MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no backend, no global figure registry

from tasks import figures as figs
from tasks.config import FIGURES, EvaluateConfig


def _makers(
    info: Any,
    cfg: EvaluateConfig,
    y_true: np.ndarray,
    score: np.ndarray,
    *,
    history: figs.History,
    best_iteration: int,
    importances: dict[str, dict[str, float]],
    features: pd.DataFrame,
    targets: dict[str, np.ndarray],
    tuned_threshold: float | None = None,
    uncalibrated: np.ndarray | None = None,
) -> dict[str, tuple[bool, Callable[[], Figure]]]:
    """Each figure's name -> (whether it fits the task and data, how to draw it).
    `uncalibrated`: the booster's own probabilities of a calibrated binary model, drawn beside
    the calibrated ones."""
    classify, classes = info.task != "regression", info.classes

    def y_pred() -> np.ndarray:
        return (score >= cfg.threshold).astype(int) if score.ndim == 1 else score.argmax(1)

    variances = {k: float(np.var(v)) for k, v in targets.items()}
    points = {"max_points": cfg.max_points, "seed": cfg.seed}
    order = list(pd.Series(importances.get("gain", {})).sort_values(ascending=False).index)
    makers: dict[str, tuple[bool, Callable[[], Figure]]] = {
        "loss_curves": (True, lambda: figs.loss_curves(history, best_iteration)),
        "metric_curve": (
            True,
            lambda: figs.metric_curve(history, info.task, cfg.target_score, variances),
        ),
        "confusion_matrix": (
            classify,
            lambda: figs.confusion_matrix(
                y_true, y_pred(), classes, cfg.threshold if score.ndim == 1 else None
            ),
        ),
        "roc": (classify, lambda: figs.roc(y_true, score, classes)),
        "precision_recall": (classify, lambda: figs.precision_recall(y_true, score, classes)),
        "calibration": (
            classify,
            lambda: figs.calibration(y_true, score, classes, uncalibrated=uncalibrated),
        ),
        "threshold": (
            info.task == "binary",
            lambda: figs.threshold_analysis(y_true, score, tuned_threshold, cfg.threshold),
        ),
        "importance": (bool(importances), lambda: figs.importance(importances, cfg.top_k)),
        "correlation": (
            features.select_dtypes("number").shape[1] > 1,
            lambda: figs.correlation(features, order, cfg.top_k),
        ),
        "predicted_vs_true": (
            not classify,
            lambda: figs.predicted_vs_true(y_true, score, **points),
        ),
        "residuals": (not classify, lambda: figs.residuals(y_true, score, **points)),
        "qq": (not classify, lambda: figs.qq(y_true, score, **points)),
        "class_balance": (True, lambda: figs.class_balance(targets, classes)),
    }
    return makers


# Drawn from the training history, the model and the data alone: they need no test-set
# predictions, so the workers draw them while the predictions are being made.
WITHOUT_PREDICTIONS = frozenset(
    {"loss_curves", "metric_curve", "importance", "correlation", "class_balance"}
)


def wanted(cfg: EvaluateConfig) -> tuple[str, ...]:
    return FIGURES if cfg.figures == "all" else tuple(cfg.figures)


def iter_figures(
    info: Any, cfg: EvaluateConfig, y_true: np.ndarray, score: np.ndarray, **context: Any
) -> Iterator[tuple[str, Figure]]:
    """The figures that fit the task and were asked for, built one at a time (the caller logs
    and drops each before the next is drawn). `info`: anything with the data's `task` and
    `classes`; `context`: as `_makers` takes it."""
    makers = _makers(info, cfg, y_true, score, **context)
    for name in wanted(cfg):
        fits, make = makers[name]
        if fits:
            yield name, make()


def render(
    name: str,
    info: Any,
    cfg: EvaluateConfig,
    y_true: Any,
    score: Any,
    context: dict,
    predicted: dict | None = None,
) -> bytes | None:
    """One figure as PNG bytes, or None when it does not fit: run on a Dask worker, so that the
    flow's process is free while they are drawn. One figure at a time per process: seaborn's
    styles are global matplotlib settings, which figures drawn side by side in threads would
    share. A figure in `WITHOUT_PREDICTIONS` takes no `y_true`, `score` or `predicted` (the
    context that comes from the predictions: `tuned_threshold`, `uncalibrated`)."""
    with figs.DRAWING:
        fits, make = _makers(info, cfg, y_true, score, **context, **(predicted or {}))[name]
        return figs.png(make()) if fits else None
