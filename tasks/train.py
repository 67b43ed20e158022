"""Train stage: XGBoost on the Dask cluster (`xgboost.dask`, quantile DMatrix), early stopping,
per-round train/valid history, progress into the Prefect logs, the model logged to MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
import xgboost.dask as dxgb
from distributed import Client, wait
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from xgboost.collective import Config

from tasks import tracking
from tasks.calibration import Platt, fit_platt
from tasks.cluster import ClusterHandle, WorkerProgress, one_trainer, train_on_worker
from tasks.config import TaskType, TrainConfig
from tasks.data import DatasetInfo
from tasks.drift import reference_summary
from tasks.serving import ModelCard

# Per task: objective and per-round metrics. The last metric drives early stopping.
_OBJECTIVES: dict[TaskType, tuple[str, list[str]]] = {
    "binary": ("binary:logistic", ["error", "logloss"]),
    "multiclass": ("multi:softprob", ["merror", "mlogloss"]),
    "regression": ("reg:squarederror", ["mae", "rmse"]),
}
_AUC = {"binary": "auc", "multiclass": "auc"}
IMBALANCE = 0.10  # positive share under which scale_pos_weight is set automatically


def xgb_params(
    task: TaskType,
    n_classes: int,
    user: dict[str, Any],
    *,
    device: str,
    eval_auc: bool,
    positive_share: float | None = None,
    auto_scale_pos_weight: bool = False,
) -> dict[str, Any]:
    """The parameters XGBoost gets: the task's defaults, then the user's `train.params`."""
    objective, metrics = _OBJECTIVES[task]
    if eval_auc and task in _AUC:
        metrics = [*metrics[:-1], _AUC[task], metrics[-1]]
    params: dict[str, Any] = {
        "objective": objective,
        "eval_metric": metrics,
        "tree_method": "hist",
        "device": device,
    }
    if task == "multiclass":
        params["num_class"] = n_classes
    if (
        task == "binary"
        and auto_scale_pos_weight
        and "scale_pos_weight" not in user
        and positive_share is not None
        and 0 < positive_share < IMBALANCE
    ):
        params["scale_pos_weight"] = round((1 - positive_share) / positive_share, 4)
    return {**params, **user}


def fit(
    client: Client,
    train: tuple[Any, Any],
    valid: tuple[Any, Any],
    params: dict[str, Any],
    *,
    num_boost_round: int,
    early_stopping_rounds: int | None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    progress_every: int = 25,
    tracker_host: str | None = "127.0.0.1",
) -> tuple[xgb.Booster, dict[str, dict[str, list[float]]]]:
    """Train on the cluster with train and valid evaluated every round: `xgboost.dask` across
    the workers of several machines (or GPUs), else plain `xgboost.train` in one worker with the
    threads of all (`tasks.cluster.one_trainer`; no collective, no sockets open to the
    network).

    Args:
        client: Dask client of the cluster.
        train, valid: (features, target) as Dask collections.
        params: XGBoost parameters (see `xgb_params`).
        progress: called on the client with `{"round": n, "<data>-<metric>": value, ...}`.
        tracker_host: where XGBoost's collective tracker listens: loopback for a local cluster
            (by default it binds the machine's external address); None for XGBoost's choice
            (a remote cluster's workers must reach it).

    Returns:
        The booster (cut at the best iteration when early stopping) and the per-round history.
    """
    callbacks: list[xgb.callback.TrainingCallback] = []
    if early_stopping_rounds:
        callbacks.append(
            xgb.callback.EarlyStopping(
                rounds=early_stopping_rounds, data_name="valid", save_best=True
            )
        )
    topic = f"glassbox-progress-{time.monotonic_ns()}"
    if progress is not None:
        callbacks.append(WorkerProgress(topic, progress_every))
        client.subscribe_topic(topic, lambda event: progress(event[1]))
    try:
        trainer = one_trainer(client, params.get("device", "cpu"))
        if trainer is not None:
            address, nthread = trainer
            # computed on the worker that trains
            parts = client.compute([*train, *valid], workers=[address])
            out = client.submit(
                train_on_worker,
                *parts,
                params,
                num_boost_round,
                callbacks,
                nthread,
                workers=[address],
                pure=False,
            ).result()
        else:
            dtrain = dxgb.DaskQuantileDMatrix(client, *train, enable_categorical=True)
            dvalid = dxgb.DaskQuantileDMatrix(client, *valid, ref=dtrain, enable_categorical=True)
            out = dxgb.train(
                client,
                params,
                dtrain,
                num_boost_round=num_boost_round,
                evals=[(dtrain, "train"), (dvalid, "valid")],
                callbacks=callbacks,
                verbose_eval=False,
                coll_cfg=Config(tracker_host_ip=tracker_host) if tracker_host else None,
            )
    finally:
        if progress is not None:
            client.unsubscribe_topic(topic)
    history = {
        d: {m: [float(v) for v in vals] for m, vals in ms.items()}
        for d, ms in out["history"].items()
    }
    return out["booster"], history


def best_iteration(booster: xgb.Booster, history: dict[str, dict[str, list[float]]]) -> int:
    """The best round (0-based): XGBoost's own record under early stopping, else the last."""
    try:
        return int(booster.best_iteration)
    except AttributeError:
        return len(next(iter(next(iter(history.values())).values()))) - 1


# --------------------------------------------------------------------------------------------
# Prefect tasks


def summarize(booster: xgb.Booster, history: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """Best round (0-based), rounds trained, and every metric at the best round."""
    best = best_iteration(booster, history)
    rounds = len(next(iter(history["train"].values())))
    at_best = {f"best_{d}-{m}": v[best] for d, ms in history.items() for m, v in ms.items()}
    return {"best_iteration": best, "rounds_trained": rounds, **at_best}


@task(name="train-xgboost", cache_policy=NO_CACHE)
def train_model(
    cluster: ClusterHandle,
    info: DatasetInfo,
    splits: dict[str, str],
    cfg: TrainConfig,
    workspace: str,
    run_id: str,
    data: dict[str, tuple[Any, Any]],
) -> dict[str, Any]:
    """Train on the cluster, log params and per-round history; return the model path and history.
    `data`: the train and valid splits on the workers (`tasks.data.preload`). `train_seconds`
    counts from the data being there: XGBoost's matrices and the boosting."""
    logger = get_run_logger()
    params = xgb_params(
        info.task,
        len(info.classes),
        cfg.params,
        device=cluster.device,
        eval_auc=cfg.eval_auc,
        positive_share=_positive_share(info, splits["train"]),
        auto_scale_pos_weight=cfg.auto_scale_pos_weight,
    )
    tracking.log_params(run_id, {f"xgb.{k}": v for k, v in params.items()})
    if one_trainer(cluster.client, cluster.device) is None:
        logger.warning(
            "Training across %d workers uses XGBoost's collective: while it trains, each worker "
            "listens on all network addresses (XGBoost has no option to bind it to one)",
            len(cluster.client.scheduler_info()["workers"]),
        )
    wait([part for pair in data.values() for part in pair])
    start = time.perf_counter()
    booster, history = fit(
        cluster.client,
        data["train"],
        data["valid"],
        params,
        num_boost_round=cfg.num_boost_round,
        early_stopping_rounds=cfg.early_stopping_rounds,
        progress=lambda p: logger.info("round %s: %s", p.pop("round"), _fmt(p)),
        progress_every=cfg.log_every,
        # A remote cluster's workers must reach the tracker; a local one's are on loopback.
        tracker_host=None if cluster.kind == "address" else "127.0.0.1",
    )
    summary = {**summarize(booster, history), "train_seconds": time.perf_counter() - start}
    tracking.log_history(run_id, history)
    tracking.log_metrics(run_id, summary)
    path = str(Path(workspace) / "model.ubj")
    booster.save_model(path)
    logger.info("Trained: %s", _fmt(summary))
    platt = None
    if info.task == "binary" and cfg.calibration == "platt":
        platt, scores = calibrate(cluster.client, booster, data["valid"])
        tracking.log_params(
            run_id, {"calibration.slope": platt.slope, "calibration.intercept": platt.intercept}
        )
        tracking.log_metrics(run_id, scores)
        logger.info("Calibrated on the valid split: %s", _fmt(scores))
    return {
        "model": path,
        "best_iteration": summary["best_iteration"],
        "history": history,
        "calibration": platt,
    }


def calibrate(client: Client, booster: xgb.Booster, valid: tuple[Any, Any]) -> tuple[Platt, dict]:
    """A Platt map fitted on the valid split's margins, and that split's log loss and Brier
    score before and after it (the valid rows also chose the best round: a mild optimism)."""
    from sklearn import metrics as skm

    features, target = valid
    margin, y = client.compute(
        [dxgb.inplace_predict(client, booster, features, predict_type="margin"), target],
        sync=True,
    )
    margin, y = np.asarray(margin), np.asarray(y)
    platt = fit_platt(margin, y)
    before, after = Platt().apply(margin), platt.apply(margin)
    scores = {
        f"valid_{name}_{when}": float(fn(y, p))
        for when, p in (("uncalibrated", before), ("calibrated", after))
        for name, fn in (("log_loss", skm.log_loss), ("brier_score", skm.brier_score_loss))
    }
    return platt, scores


def _positive_share(info: DatasetInfo, train_path: str) -> float | None:
    if info.task != "binary":
        return None
    return float(pd.read_parquet(train_path, columns=[info.target])[info.target].mean())


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.5g}" for k, v in metrics.items() if isinstance(v, float | int))


@task(name="log-model", cache_policy=NO_CACHE)
def log_model(
    trained: dict[str, Any],
    info: DatasetInfo,
    example_path: str,
    threshold: float,
    run_id: str,
    train_path: str | None = None,
    inputs: dict[str, Any] | None = None,
) -> tracking.LoggedModel:
    """Log the model MLflow serves (booster + preprocessing + calibration + label names), with
    the drift check's summary of its training split (`train_path`) and the raw inputs as
    training saw them (`inputs`, for `glassbox app`) inside."""
    card = ModelCard(
        task=info.task,
        spec=info.spec,
        classes=info.classes,
        threshold=threshold,
        calibration=trained["calibration"],
        labels=info.label_values,
    )
    model_path = trained["model"]
    # Beside the booster first: if logging fails, the run keeps both (`flows.train`).
    (Path(model_path).parent / "card.json").write_text(card.to_json())
    metadata = {
        "task": info.task,
        "classes": info.classes,
        "categories": info.categories,
        "features": info.features,
        "threshold": threshold if info.task == "binary" else None,
    }
    reference = None
    if train_path is not None:
        train = pd.read_parquet(train_path)
        reference = reference_summary(
            train[info.features], train[info.target], classes=info.classes or None
        )
    logged = tracking.log_glassbox_model(
        run_id,
        model_path,
        card,
        pd.read_parquet(example_path),
        metadata=metadata,
        reference=reference,
        inputs=inputs,
    )
    get_run_logger().info("Logged model %s", logged.uri)
    return logged


@task(name="register-model", cache_policy=NO_CACHE)
def register_model(logged: tracking.LoggedModel, name: str) -> str:
    """Register the run's model as a new version of `name`: the flow's last step, so no version
    comes from a run that did not finish."""
    version = tracking.register_model(logged.uri, name)
    get_run_logger().info("Registered %s version %s", name, version)
    return version
