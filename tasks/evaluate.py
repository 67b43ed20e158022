"""Evaluate stage: test-set predictions computed once on the cluster; metrics and figures."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no backend, no global figure registry
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sklearn import metrics as skm

from tasks import tracking
from tasks.cluster import ClusterHandle
from tasks.config import EvaluateConfig, TaskType
from tasks.data import DatasetInfo, dask_split


def test_metrics(
    task: TaskType, y_true: np.ndarray, y_proba: np.ndarray, *, threshold: float = 0.5
) -> dict[str, float]:
    """Headline test metrics from predictions computed once.

    Args:
        task: binary, multiclass or regression.
        y_true: class codes, or values for regression.
        y_proba: P(class 1) for binary, (n, K) probabilities for multiclass, predictions for
            regression.
        threshold: decision threshold for binary labels.
    """
    if task == "regression":
        return {
            "test_rmse": float(skm.root_mean_squared_error(y_true, y_proba)),
            "test_mae": float(skm.mean_absolute_error(y_true, y_proba)),
            "test_r2": float(skm.r2_score(y_true, y_proba)),
        }
    if task == "binary":
        y_pred = (y_proba >= threshold).astype(int)
        return {
            "test_accuracy": float(skm.accuracy_score(y_true, y_pred)),
            "test_precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
            "test_recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
            "test_f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
            "test_roc_auc": float(skm.roc_auc_score(y_true, y_proba)),
            "test_log_loss": float(skm.log_loss(y_true, y_proba, labels=[0, 1])),
        }
    y_pred = y_proba.argmax(axis=1)
    labels = list(range(y_proba.shape[1]))
    return {
        "test_accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "test_f1_macro": float(
            skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
        ),
        "test_log_loss": float(skm.log_loss(y_true, y_proba, labels=labels)),
    }


def loss_curves_figure(
    history: dict[str, dict[str, list[float]]], best_iteration: int | None = None
) -> Figure:
    """Train vs valid per round, one panel per evaluation metric, best round marked."""
    import seaborn as sns

    metrics = list(next(iter(history.values())))
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(5.5 * len(metrics), 4), layout="tight")
        axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for data, values in history.items():
            ax.plot(np.arange(1, len(values[metric]) + 1), values[metric], label=data, lw=1.8)
        if best_iteration is not None:
            ax.axvline(
                best_iteration + 1,
                color="0.4",
                ls="--",
                lw=1,
                label=f"best round ({best_iteration + 1})",
            )
        ax.set(title=f"{metric} per boosting round", xlabel="boosting round", ylabel=metric)
        ax.legend()
    return fig


def predict(
    cluster: ClusterHandle, model_path: str, info: DatasetInfo, path: str
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions for one split, computed on the cluster; only the arrays come back."""
    import xgboost as xgb
    import xgboost.dask as dxgb

    features, target = dask_split(path, info)
    booster = xgb.Booster(model_file=model_path)
    proba = dxgb.inplace_predict(cluster.client, booster, features)
    y_true, proba = cluster.client.compute([target, proba], sync=True)
    return np.asarray(y_true), np.asarray(proba)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(
    cluster: ClusterHandle,
    trained: dict[str, Any],
    info: DatasetInfo,
    splits: dict[str, str],
    cfg: EvaluateConfig,
    run_id: str,
) -> dict[str, float]:
    """Predict the test set on the cluster; log test metrics and the loss curves."""
    y_true, y_proba = predict(cluster, trained["model"], info, splits["test"])
    scores = test_metrics(info.task, y_true, y_proba, threshold=cfg.threshold)
    tracking.log_metrics(run_id, scores)
    tracking.log_figure(
        run_id,
        loss_curves_figure(trained["history"], trained["best_iteration"]),
        "figures/loss_curves.png",
    )
    get_run_logger().info("Test set: %s", ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return scores
