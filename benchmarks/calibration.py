"""Are the probabilities a user reads calibrated? Measures the choices for binary models on the
fraud preset at two sizes and on a balanced set, with the preset's parameters and split:

- `weighted`: scale_pos_weight = negatives/positives (Glassbox's default before this benchmark),
- `weighted+platt`: the same, then a logistic (Platt) map of the margin fitted on the valid split,
- `unweighted`: no reweighting (the decision threshold is tuned on the valid split instead),
- `unweighted+platt`.

Prints per data set and choice: test Brier score, log loss, average precision, ROC AUC, expected
calibration error (10 quantile bins of the predicted probability), F1 at 0.5 and at the F1-tuned
threshold from the valid split, the observed positive rate among rows scored 0.8-0.9, and for
the rows scored 0.5 or more the mean probability against their observed positive rate.
Run: `python benchmarks/calibration.py [--fraud-rows 284807 50000]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xgboost as xgb
from sklearn import metrics as skm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.calibration import fit_platt
from tasks.config import DataConfig, SplitConfig
from tasks.data import prepare, split_frame
from tasks.datasets import make_fraud
from tasks.metrics import best_f1_threshold, expected_calibration_error

PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "max_depth": 6,
    "learning_rate": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "seed": 0,
}


def scores(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    band = (p >= 0.8) & (p < 0.9)
    flagged = p >= 0.5
    return {
        "brier": skm.brier_score_loss(y, p),
        "log_loss": skm.log_loss(y, p, labels=[0, 1]),
        "average_precision": skm.average_precision_score(y, p),
        "roc_auc": skm.roc_auc_score(y, p),
        "ece": expected_calibration_error(y, p),
        "f1_at_0.5": skm.f1_score(y, p >= 0.5, zero_division=0),
        "f1_tuned": skm.f1_score(y, p >= threshold, zero_division=0),
        "rows_0.8-0.9": int(band.sum()),
        "positive_rate_0.8-0.9": float(y[band].mean()) if band.any() else float("nan"),
        # rows scored 0.5 or more: what the model claims for them, and what they are
        "flagged_mean_p": float(p[flagged].mean()) if flagged.any() else float("nan"),
        "flagged_positive_rate": float(y[flagged].mean()) if flagged.any() else float("nan"),
    }


def run(name: str, frame, target: str) -> list[dict]:
    data, info = prepare(
        frame, DataConfig(source="builtin:x", target=target), default_target=target, name=name
    )
    parts = split_frame(data, info, SplitConfig())
    mats = {
        k: xgb.DMatrix(v[info.features], v[info.target], enable_categorical=True)
        for k, v in parts.items()
    }
    ys = {k: v[info.target].to_numpy() for k, v in parts.items()}
    share = ys["train"].mean()
    rows = []
    for weighted in (True, False):
        params = {**PARAMS, "nthread": 2}
        if weighted:
            params["scale_pos_weight"] = (1 - share) / share
        booster = xgb.train(
            params,
            mats["train"],
            300,
            evals=[(mats["valid"], "valid")],
            early_stopping_rounds=30,
            verbose_eval=False,
        )
        margin = {
            k: booster.predict(
                m, output_margin=True, iteration_range=(0, booster.best_iteration + 1)
            )
            for k, m in mats.items()
        }
        platt = fit_platt(margin["valid"], ys["valid"])
        for calibrated in (False, True):
            proba = {
                k: platt.apply(m) if calibrated else 1 / (1 + np.exp(-m)) for k, m in margin.items()
            }
            threshold = best_f1_threshold(ys["valid"], proba["valid"])
            choice = ("weighted" if weighted else "unweighted") + ("+platt" if calibrated else "")
            row = {"data": name, "choice": choice, **scores(ys["test"], proba["test"], threshold)}
            rows.append(row)
            print(
                f"{name:<16} {choice:<17} "
                + " ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in row.items()
                    if k not in ("data", "choice")
                ),
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fraud-rows", type=int, nargs="+", default=[284_807, 50_000])
    args = parser.parse_args()
    rows = []
    for n in args.fraud_rows:
        rows += run(f"fraud-{n}", make_fraud(n, seed=7), "Class")
    balanced = make_fraud(50_000, positive_rate=0.5, seed=3)
    rows += run("balanced-50000", balanced, "Class")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
