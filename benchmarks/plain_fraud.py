"""The fraud preset's stages as a plain script: no Prefect, no MLflow, no Dask, plain
`xgboost.train`; the same data, split, parameters, metrics, figures (drawn by the same pure
functions, saved as PNG) and model file.

The baseline of `overhead.py`. Prints one JSON line: seconds per stage, rounds trained.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import xgboost as xgb
import yaml
from sklearn.model_selection import train_test_split

from tasks import figures as figs
from tasks.calibration import fit_platt
from tasks.config import validate_config
from tasks.datasets import FRAUD_ROWS, make_fraud
from tasks.metrics import best_f1_threshold, evaluation_metrics, per_class_metrics

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
        classes = ["0", "1"]
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
        params = {
            "objective": "binary:logistic",
            "eval_metric": ["error", "logloss"],
            "tree_method": "hist",
            "nthread": threads,
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
        # The flow's calibration: a Platt map of the valid split's margins.
        platt = fit_platt(booster.inplace_predict(x_valid, predict_type="margin"), y_valid)
    with stage("evaluate"):
        proba = platt.apply(booster.inplace_predict(x_test, predict_type="margin"))
        valid_proba = platt.apply(booster.inplace_predict(x_valid, predict_type="margin"))
        tuned = best_f1_threshold(y_valid.to_numpy(), valid_proba)
        scores = evaluation_metrics("binary", y_test.to_numpy(), proba, tuned_threshold=tuned)
        per_class_metrics(y_test.to_numpy(), proba, classes).to_csv(args.out / "per_class.csv")
    with stage("figures"):
        # The same figures the flow logs for a binary model, drawn by the same functions.
        y_true, y_pred = y_test.to_numpy(), (proba >= 0.5).astype(int)
        kinds = ("gain", "weight", "cover")
        importances = {k: booster.get_score(importance_type=k) for k in kinds}
        order = sorted(importances["gain"], key=importances["gain"].get, reverse=True)
        sample = x_train.iloc[figs.sample_index(len(x_train), 20_000, 0)]
        targets = {"train": y_train.to_numpy(), "valid": y_valid.to_numpy(), "test": y_true}
        drawn = {
            "loss_curves": lambda: figs.loss_curves(history, booster.best_iteration),
            "metric_curve": lambda: figs.metric_curve(history, "binary", 0.9),
            "confusion_matrix": lambda: figs.confusion_matrix(y_true, y_pred, classes, 0.5),
            "roc": lambda: figs.roc(y_true, proba, classes),
            "precision_recall": lambda: figs.precision_recall(y_true, proba, classes),
            "calibration": lambda: figs.calibration(y_true, proba, classes),
            "threshold": lambda: figs.threshold_analysis(y_true, proba, tuned),
            "importance": lambda: figs.importance(importances, 20),
            "correlation": lambda: figs.correlation(sample, order, 20),
            "class_balance": lambda: figs.class_balance(targets, classes),
        }
        for name, draw in drawn.items():
            # Saved as the flow saves them (`figures.png`: a laid-out figure is not cropped).
            (args.out / f"{name}.png").write_bytes(figs.png(draw()))
    with stage("save_model"):
        booster.save_model(args.out / "model.ubj")
        (args.out / "metrics.json").write_text(json.dumps(scores))
    rounds = len(history["valid"]["logloss"])
    print(json.dumps({"stages": stages, "rounds": rounds, "roc_auc": scores["test_roc_auc"]}))


if __name__ == "__main__":
    main()
