"""The fraud preset's stages as a plain script: no Prefect, no MLflow, no Dask, plain
`xgboost.train`; the same data, split, parameters, metrics, loss-curve figure and model file.

The baseline of `overhead.py`. Prints one JSON line: seconds per stage, rounds trained.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xgboost as xgb
import yaml
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split

from tasks.config import validate_config
from tasks.datasets import FRAUD_ROWS, make_fraud

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "conf" / "fraud.yaml")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = validate_config(yaml.safe_load(args.config.read_text()))
    stages: dict[str, float] = {}

    @contextmanager
    def stage(name: str):
        start = time.perf_counter()
        yield
        stages[name] = time.perf_counter() - start

    with stage("load"):
        frame = make_fraud(cfg.data.rows or FRAUD_ROWS, seed=cfg.data.seed)
        x, y = frame.drop(columns="Class").astype("float64"), frame["Class"]
    with stage("split"):
        n_test, n_valid = round(len(x) * cfg.split.test), round(len(x) * cfg.split.valid)
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=n_test, random_state=cfg.split.seed, stratify=y
        )
        x_train, x_valid, y_train, y_valid = train_test_split(
            x_rest, y_rest, test_size=n_valid, random_state=cfg.split.seed, stratify=y_rest
        )
    with stage("train"):
        threads = os.cpu_count() or 1
        share = float(y_train.mean())
        params = {
            "objective": "binary:logistic",
            "eval_metric": ["error", "logloss"],
            "tree_method": "hist",
            "nthread": threads,
            "scale_pos_weight": round((1 - share) / share, 4),
            **cfg.train.params,
        }
        dtrain = xgb.QuantileDMatrix(x_train, y_train, nthread=threads)
        dvalid = xgb.QuantileDMatrix(x_valid, y_valid, ref=dtrain, nthread=threads)
        history: dict = {}
        callbacks = []
        if cfg.train.early_stopping_rounds:
            callbacks.append(
                xgb.callback.EarlyStopping(
                    rounds=cfg.train.early_stopping_rounds, data_name="valid", save_best=True
                )
            )
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=cfg.train.num_boost_round,
            evals=[(dtrain, "train"), (dvalid, "valid")],
            evals_result=history,
            callbacks=callbacks,
            verbose_eval=False,
        )
    with stage("evaluate"):
        proba = booster.inplace_predict(x_test)
        pred = (proba >= 0.5).astype(int)
        scores = {
            "accuracy": skm.accuracy_score(y_test, pred),
            "precision": skm.precision_score(y_test, pred, zero_division=0),
            "recall": skm.recall_score(y_test, pred, zero_division=0),
            "f1": skm.f1_score(y_test, pred, zero_division=0),
            "roc_auc": skm.roc_auc_score(y_test, proba),
            "log_loss": skm.log_loss(y_test, proba),
        }
    with stage("figures"):
        metrics = list(history["train"])
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4))
        for ax, metric in zip(np.atleast_1d(axes), metrics, strict=True):
            for data, values in history.items():
                ax.plot(np.arange(1, len(values[metric]) + 1), values[metric], label=data)
            ax.axvline(booster.best_iteration + 1, color="0.4", ls="--", label="best round")
            ax.set(title=f"{metric} per boosting round", xlabel="boosting round", ylabel=metric)
            ax.legend()
        fig.savefig(args.out / "loss_curves.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    with stage("save_model"):
        booster.save_model(args.out / "model.ubj")
        (args.out / "metrics.json").write_text(json.dumps(scores))
    rounds = len(history["valid"]["logloss"])
    print(json.dumps({"stages": stages, "rounds": rounds, "roc_auc": scores["roc_auc"]}))


if __name__ == "__main__":
    main()
