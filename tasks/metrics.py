"""Evaluation metrics: pure functions of predictions computed once; values equal scikit-learn's
(and, for the names both compute, what `mlflow.models.evaluate` reports). No Prefect, no MLflow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from tasks.config import TaskType

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
        # MLflow's name for the same value (it reports average precision as the PR AUC)
        precision_recall_auc=skm.average_precision_score(y_true, proba),
        log_loss=skm.log_loss(y_true, proba, labels=[0, 1]),
        brier_score=skm.brier_score_loss(y_true, proba),
    )
    return {k: float(v) for k, v in scores.items()}


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Mean |observed positive rate - mean predicted probability| over `bins` quantile bins of
    the prediction, weighted by the bins' rows (equal-count bins: with rare positives, fixed
    bins above 0.1 hold almost no rows)."""
    order = np.argsort(proba, kind="stable")
    gaps = [
        len(part) * abs(float(np.mean(y_true[part])) - float(np.mean(proba[part])))
        for part in np.array_split(order, bins)
        if len(part)
    ]
    return float(np.sum(gaps) / len(proba))


def best_f1_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The probability threshold that maximises F1 (chosen on the valid set, used on test)."""
    precision, recall, thresholds = skm.precision_recall_curve(y_true, proba)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def multiclass_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro/weighted precision, recall, F1 and one-vs-rest AUC,
    log loss, from (n, K) class probabilities; the weighted ones also under MLflow's names
    (`f1_score`, `precision_score`, `recall_score`, `roc_auc`)."""
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
    # mlflow.models.evaluate's names: weighted averages without a suffix
    for name in ("precision", "recall", "f1"):
        scores[f"{name}_score"] = scores[f"{name}_weighted"]
    scores["roc_auc"] = scores["roc_auc_weighted"]
    return {k: float(v) for k, v in scores.items()}


def per_class_metrics(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str], threshold: float = 0.5
) -> pd.DataFrame:
    """One row per class: precision, recall, F1, support and one-vs-rest AUC. Binary labels
    are decided at `threshold` (the run's), which the table states in a column."""
    labels = list(range(len(classes)))
    y_pred = proba.argmax(axis=1) if proba.ndim == 2 else (proba >= threshold).astype(int)
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
    table = pd.DataFrame(
        {"class": classes, "precision": p, "recall": r, "f1": f, "support": support, "roc_auc": auc}
    )
    return table.assign(threshold=threshold) if proba.ndim == 1 else table


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
