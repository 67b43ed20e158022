"""Evaluate stage: test-set predictions computed once on the cluster; metrics and figures."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import figures as figs
from tasks import tracking
from tasks.calibration import Platt
from tasks.cluster import ClusterHandle
from tasks.config import EvaluateConfig, TaskType
from tasks.data import DatasetInfo, dask_split
from tasks.evaluation_figures import WITHOUT_PREDICTIONS, render, wanted
from tasks.metrics import (
    HEADLINE,
    best_f1_threshold,
    binary_metrics,
    evaluation_metrics,
    per_class_metrics,
)


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


def predict(
    cluster: ClusterHandle,
    model_path: str,
    info: DatasetInfo,
    paths: list[str],
    predict_type: str = "value",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Targets and predictions of split files, computed on the cluster in one pass; only the
    arrays come back. Predictions are P(class 1), class probabilities or values, or with
    `predict_type="margin"` the raw margin."""
    import xgboost as xgb
    import xgboost.dask as dxgb

    booster = xgb.Booster(model_file=model_path)
    lazy = []
    for path in paths:
        features, target = dask_split(path, info)
        lazy += [
            target,
            dxgb.inplace_predict(cluster.client, booster, features, predict_type=predict_type),
        ]
    arrays = [np.asarray(a) for a in cluster.client.compute(lazy, sync=True)]
    return list(zip(arrays[::2], arrays[1::2], strict=True))


def calibrated(
    preds: list[tuple[np.ndarray, np.ndarray]], platt: Platt
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Margins -> the calibrated probabilities, and the booster's own (uncalibrated) ones."""
    own = [Platt().apply(margin) for _, margin in preds]  # the identity map: the booster's own
    return [(y, platt.apply(margin)) for y, margin in preds], own


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
    platt = trained.get("calibration")
    client = cluster.client
    task_and_classes = SimpleNamespace(task=info.task, classes=list(info.classes))
    context = _figure_context(trained["model"], info, splits, cfg)
    row_ids = context.pop("row_ids")
    # Drawn on the workers (their own processes) while this one computes and logs the metrics
    # and the tables; logged in one batch, in the usual order. The figures that need no
    # predictions are drawn while the test set is predicted.
    shared = client.scatter(
        {"history": trained["history"], "best_iteration": trained["best_iteration"], **context},
        hash=False,
    )

    def draw(name: str, y: Any = None, score: Any = None, predicted: Any = None) -> Any:
        return client.submit(
            render, name, task_and_classes, cfg, y, score, shared, predicted, pure=False
        )

    names = wanted(cfg)
    drawing = {n: draw(n) for n in names if n in WITHOUT_PREDICTIONS}
    paths = [splits["test"], *[splits["valid"]] * binary]
    preds = predict(cluster, trained["model"], info, paths, "margin" if platt else "value")
    uncalibrated = None
    if platt is not None:
        preds, own = calibrated(preds, platt)
        uncalibrated = own[0]
    tuned = best_f1_threshold(*preds[1]) if binary else None
    predicted = client.scatter(
        {
            "y": preds[0][0],
            "score": preds[0][1],
            "predicted": {"tuned_threshold": tuned, "uncalibrated": uncalibrated},
        },
        hash=False,
    )
    drawing |= {
        n: draw(n, predicted["y"], predicted["score"], predicted["predicted"])
        for n in names
        if n not in WITHOUT_PREDICTIONS
    }
    logged: list[str] = []
    scores = evaluation_metrics(
        info.task, *preds[0], threshold=cfg.threshold, tuned_threshold=tuned
    )
    if uncalibrated is not None:  # before and after the map, on the test rows
        before = binary_metrics(preds[0][0], uncalibrated)
        scores |= {f"test_{k}_uncalibrated": before[k] for k in ("log_loss", "brier_score")}
    tracking.log_metrics(run_id, scores)
    for name, table in _tables(info, cfg, preds[0], row_ids):
        tracking.log_table(run_id, table, f"tables/{name}.json")
    with tracking.artifact_batch(run_id, "figures") as out:
        for name, png in zip(names, client.gather([drawing[n] for n in names]), strict=True):
            if png is not None:
                logged.append(f"figures/{name}.png")
                out.write_bytes(f"{name}.png", png)
    get_run_logger().info("Test set: %s", headline(info.task, scores))
    return {"metrics": scores, "figures": logged}


def _figure_context(
    model_path: str, info: DatasetInfo, splits: dict[str, str], cfg: EvaluateConfig
) -> dict[str, Any]:
    """What the figures need besides predictions: importances, a feature sample, the targets."""
    import xgboost as xgb

    booster = xgb.Booster(model_file=model_path)
    importances = {k: booster.get_score(importance_type=k) for k in ("gain", "weight", "cover")}
    targets = {k: pd.read_parquet(p, columns=[info.target])[info.target] for k, p in splits.items()}
    train = pd.read_parquet(splits["train"], columns=info.features)
    return {
        "importances": {k: v for k, v in importances.items() if v},  # a stump-only model has none
        "features": train.iloc[figs.sample_index(len(train), cfg.max_points, cfg.seed)],
        "targets": {k: v.to_numpy() for k, v in targets.items()},
        "row_ids": targets["test"].index.to_numpy(),
    }


def _tables(
    info: DatasetInfo,
    cfg: EvaluateConfig,
    test: tuple[np.ndarray, np.ndarray],
    row_ids: np.ndarray,
) -> Iterator[tuple[str, pd.DataFrame]]:
    if info.classes:
        yield "per_class_metrics", per_class_metrics(*test, info.classes, cfg.threshold)
    if cfg.sample_predictions:
        yield (
            "test_predictions",
            predictions_table(
                row_ids,
                *test,
                info.classes,
                threshold=cfg.threshold,
                rows=cfg.sample_predictions,
                seed=cfg.seed,
            ),
        )


def headline(task: TaskType, scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {scores[k]:.4f}" for k in HEADLINE[task] if k in scores)
