"""Evaluate stage: test-set predictions computed once on the cluster; metrics and figures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no backend, no global figure registry
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sklearn import metrics as skm

from tasks import figures as figs
from tasks import tracking
from tasks.cluster import ClusterHandle
from tasks.config import FIGURES, EvaluateConfig, TaskType
from tasks.data import DatasetInfo, dask_split

# Names follow mlflow.models.evaluate where both compute a metric (accuracy_score, f1_score,
# roc_auc, log_loss, true_positives, root_mean_squared_error, ...), so runs compare across tools.
HEADLINE: dict[TaskType, tuple[str, ...]] = {
    "binary": (
        "test_roc_auc",
        "test_average_precision",
        "test_f1_score",
        "test_tuned_f1_score",
        "test_log_loss",
    ),
    "multiclass": ("test_accuracy_score", "test_f1_macro", "test_roc_auc_macro", "test_log_loss"),
    "regression": ("test_root_mean_squared_error", "test_mean_absolute_error", "test_r2_score"),
}


def binary_label_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Metrics of hard 0/1 predictions: the ones that move with the decision threshold."""
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "accuracy_score": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy_score": skm.balanced_accuracy_score(y_true, y_pred),
        "precision_score": skm.precision_score(y_true, y_pred, zero_division=0),
        "recall_score": skm.recall_score(y_true, y_pred, zero_division=0),
        "f1_score": skm.f1_score(y_true, y_pred, zero_division=0),
        "matthews_corrcoef": skm.matthews_corrcoef(y_true, y_pred),
        "true_negatives": tn,
        "false_positives": fp,
        "false_negatives": fn,
        "true_positives": tp,
    }


def binary_metrics(
    y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """All binary metrics: label metrics at `threshold` plus the threshold-free ones.

    Args:
        y_true: 0/1 labels.
        proba: P(class 1).
        threshold: a row is predicted positive when `proba >= threshold`.
    """
    scores = binary_label_metrics(y_true, (proba >= threshold).astype(int))
    scores.update(
        example_count=len(y_true),
        roc_auc=skm.roc_auc_score(y_true, proba),
        average_precision=skm.average_precision_score(y_true, proba),
        log_loss=skm.log_loss(y_true, proba, labels=[0, 1]),
        brier_score=skm.brier_score_loss(y_true, proba),
    )
    return {k: float(v) for k, v in scores.items()}


def best_f1_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The probability threshold that maximises F1 (chosen on the valid set, used on test)."""
    precision, recall, thresholds = skm.precision_recall_curve(y_true, proba)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def multiclass_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro/weighted precision, recall, F1 and one-vs-rest AUC,
    log loss, from (n, K) class probabilities."""
    labels = list(range(proba.shape[1]))
    y_pred = proba.argmax(axis=1)
    scores: dict[str, Any] = {
        "example_count": len(y_true),
        "accuracy_score": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy_score": skm.balanced_accuracy_score(y_true, y_pred),
        "log_loss": skm.log_loss(y_true, proba, labels=labels),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        scores |= {f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f}
        scores[f"roc_auc_{average}"] = skm.roc_auc_score(
            y_true, proba, labels=labels, average=average, multi_class="ovr"
        )
    return {k: float(v) for k, v in scores.items()}


def per_class_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per class: precision, recall, F1, support and one-vs-rest AUC."""
    labels = list(range(len(classes)))
    y_pred = proba.argmax(axis=1) if proba.ndim == 2 else (proba >= 0.5).astype(int)
    scores = proba if proba.ndim == 2 else np.column_stack([1 - proba, proba])
    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    auc = [
        skm.roc_auc_score(y_true == k, scores[:, k])
        if 0 < (y_true == k).sum() < len(y_true)
        else np.nan
        for k in labels
    ]
    return pd.DataFrame(
        {"class": classes, "precision": p, "recall": r, "f1": f, "support": support, "roc_auc": auc}
    )


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Regression metrics. MAPE is over the rows whose target is not zero (sklearn divides by
    a tiny epsilon there, which makes it meaningless); it is left out when every target is 0."""
    scores = {
        "example_count": len(y_true),
        "root_mean_squared_error": skm.root_mean_squared_error(y_true, y_pred),
        "mean_squared_error": skm.mean_squared_error(y_true, y_pred),
        "mean_absolute_error": skm.mean_absolute_error(y_true, y_pred),
        "median_absolute_error": skm.median_absolute_error(y_true, y_pred),
        "r2_score": skm.r2_score(y_true, y_pred),
        "explained_variance_score": skm.explained_variance_score(y_true, y_pred),
        "max_error": skm.max_error(y_true, y_pred),
    }
    nonzero = y_true != 0
    if nonzero.any():
        scores["mean_absolute_percentage_error"] = skm.mean_absolute_percentage_error(
            y_true[nonzero], y_pred[nonzero]
        )
    return {k: float(v) for k, v in scores.items()}


def evaluation_metrics(
    task: TaskType,
    y_true: np.ndarray,
    score: np.ndarray,
    *,
    threshold: float = 0.5,
    tuned_threshold: float | None = None,
) -> dict[str, float]:
    """The test-set metrics of a run, prefixed `test_`.

    Binary models also get the label metrics at `tuned_threshold` (`test_tuned_*`, with the
    threshold itself as `tuned_threshold`) when one was chosen on the valid set.
    """
    if task == "regression":
        out = regression_metrics(y_true, score)
    elif task == "multiclass":
        out = multiclass_metrics(y_true, score)
    else:
        out = binary_metrics(y_true, score, threshold)
        if tuned_threshold is not None:
            tuned = binary_label_metrics(y_true, (score >= tuned_threshold).astype(int))
            out |= {f"tuned_{k}": float(v) for k, v in tuned.items()}
    prefixed = {f"test_{k}": v for k, v in out.items()}
    if tuned_threshold is not None and task == "binary":
        prefixed["tuned_threshold"] = tuned_threshold
    return prefixed


def predictions_table(
    row_ids: np.ndarray,
    y_true: np.ndarray,
    score: np.ndarray,
    classes: list[str],
    *,
    threshold: float,
    rows: int,
    seed: int,
) -> pd.DataFrame:
    """A seeded sample of test predictions with the rows' own ids: true and predicted label
    and the probability (classification), or true, predicted and residual (regression)."""
    idx = figs.sample_index(len(y_true), rows, seed)
    if not classes:
        return pd.DataFrame(
            {
                "row_id": row_ids[idx],
                "true": y_true[idx],
                "predicted": score[idx],
                "residual": y_true[idx] - score[idx],
            }
        )
    if score.ndim == 1:
        pred, prob = (score >= threshold).astype(int), score
        prob_name = f"p_{classes[1]}"
    else:
        pred, prob, prob_name = score.argmax(1), score.max(1), "p_predicted"
    names = np.asarray(classes)
    return pd.DataFrame(
        {
            "row_id": row_ids[idx],
            "true": names[y_true[idx]],
            "predicted": names[pred[idx]],
            prob_name: prob[idx],
        }
    )


def iter_figures(
    info: DatasetInfo,
    cfg: EvaluateConfig,
    y_true: np.ndarray,
    score: np.ndarray,
    *,
    history: figs.History,
    best_iteration: int,
    importances: dict[str, dict[str, float]],
    features: pd.DataFrame,
    targets: dict[str, np.ndarray],
    tuned_threshold: float | None,
) -> Iterator[tuple[str, Figure]]:
    """The figures that fit the task and were asked for, built one at a time (the caller logs
    and drops each before the next is drawn)."""
    classify, classes = info.task != "regression", info.classes
    if classify:
        y_pred = (score >= cfg.threshold).astype(int) if score.ndim == 1 else score.argmax(1)
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
                y_true, y_pred, classes, cfg.threshold if score.ndim == 1 else None
            ),
        ),
        "roc": (classify, lambda: figs.roc(y_true, score, classes)),
        "precision_recall": (classify, lambda: figs.precision_recall(y_true, score, classes)),
        "calibration": (classify, lambda: figs.calibration(y_true, score, classes)),
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
    wanted = FIGURES if cfg.figures == "all" else cfg.figures
    for name in wanted:
        fits, make = makers[name]
        if fits:
            yield name, make()


def predict(
    cluster: ClusterHandle, model_path: str, info: DatasetInfo, paths: list[str]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Targets and predictions of split files, computed on the cluster in one pass; only the
    arrays come back. Predictions are P(class 1), class probabilities or values."""
    import xgboost as xgb
    import xgboost.dask as dxgb

    booster = xgb.Booster(model_file=model_path)
    lazy = []
    for path in paths:
        features, target = dask_split(path, info)
        lazy += [target, dxgb.inplace_predict(cluster.client, booster, features)]
    arrays = [np.asarray(a) for a in cluster.client.compute(lazy, sync=True)]
    return list(zip(arrays[::2], arrays[1::2], strict=True))


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(
    cluster: ClusterHandle,
    trained: dict[str, Any],
    info: DatasetInfo,
    splits: dict[str, str],
    cfg: EvaluateConfig,
    run_id: str,
) -> dict[str, Any]:
    """Predict the test set (and the valid set, where a binary threshold is tuned) on the
    cluster; log the metrics, the figures and the tables. Returns the metrics and the figures'
    artifact paths."""
    binary = info.task == "binary"
    preds = predict(cluster, trained["model"], info, [splits["test"], *[splits["valid"]] * binary])
    tuned = best_f1_threshold(*preds[1]) if binary else None
    scores = evaluation_metrics(
        info.task, *preds[0], threshold=cfg.threshold, tuned_threshold=tuned
    )
    tracking.log_metrics(run_id, scores)
    context = _figure_context(trained["model"], info, splits, cfg)
    row_ids = context.pop("row_ids")
    logged: list[str] = []
    for name, fig in iter_figures(
        info,
        cfg,
        *preds[0],
        history=trained["history"],
        best_iteration=trained["best_iteration"],
        tuned_threshold=tuned,
        **context,
    ):
        logged.append(f"figures/{name}.png")
        tracking.log_figure(run_id, fig, logged[-1])
    for name, table in _tables(info, cfg, preds[0], row_ids, cfg.threshold):
        tracking.log_table(run_id, table, f"tables/{name}.json")
    get_run_logger().info("Test set: %s", headline(info.task, scores))
    return {"metrics": scores, "figures": logged}


def _figure_context(
    model_path: str, info: DatasetInfo, splits: dict[str, str], cfg: EvaluateConfig
) -> dict[str, Any]:
    """What the figures need besides predictions: importances, a feature sample, the targets."""
    import xgboost as xgb

    booster = xgb.Booster(model_file=model_path)
    kinds = ("gain", "weight", "cover")
    targets = {k: pd.read_parquet(p, columns=[info.target])[info.target] for k, p in splits.items()}
    train = pd.read_parquet(splits["train"], columns=info.features)
    return {
        "importances": {
            k: booster.get_score(importance_type=k)
            for k in kinds
            if booster.get_score(importance_type=k)
        },
        "features": train.iloc[figs.sample_index(len(train), cfg.max_points, cfg.seed)],
        "targets": {k: v.to_numpy() for k, v in targets.items()},
        "row_ids": targets["test"].index.to_numpy(),
    }


def _tables(
    info: DatasetInfo,
    cfg: EvaluateConfig,
    test: tuple[np.ndarray, np.ndarray],
    row_ids: np.ndarray,
    threshold: float,
) -> Iterator[tuple[str, pd.DataFrame]]:
    if info.classes:
        yield "per_class_metrics", per_class_metrics(*test, info.classes)
    if cfg.sample_predictions:
        yield (
            "test_predictions",
            predictions_table(
                row_ids,
                *test,
                info.classes,
                threshold=threshold,
                rows=cfg.sample_predictions,
                seed=cfg.seed,
            ),
        )


def headline(task: TaskType, scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {scores[k]:.4f}" for k in HEADLINE[task] if k in scores)
