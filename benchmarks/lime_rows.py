"""LIME speed: seconds per explained row, Glassbox's LIME against plain LIME one row at a time.

The fraud preset's data and model (284,807 rows, 30 features; trained here with plain
`xgboost.train`, the preset's split, parameters and early stopping), the rows the flow's
default rules pick (5 riskiest, 5 + 5 most confident errors, 5 random; fewer when rules pick
the same row), 5,000 samples per row, explainers built on 5,000 training rows. Measured in one
process, one after the other:

- plain: `LimeTabularExplainer` with its own quartile discretiser, the model behind an sklearn
  wrapper (`XGBClassifier.predict_proba` on a DataFrame rebuilt per call), rows one at a time;
- ours, 1 thread: `tasks.lime_rows` (booster on LIME's arrays, vectorised undiscretisation) in
  this process, rows one at a time (the per-row cost without any parallelism);
- ours on Dask: `tasks.explain.lime_chunks` (LIME as the flow runs it, without the figures),
  rows in chunks over local clusters of 1x1, 1x2 and
  2x1 workers x threads (warm: each cluster explains the rows once before it is timed).

Prints a table and one JSON line. Run: `python benchmarks/lime_rows.py [--rows 20]`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
import xgboost as xgb
import yaml
from lime.lime_tabular import LimeTabularExplainer
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from tasks.cluster import dask_cluster
from tasks.config import ClusterConfig, ExplainConfig, validate_config
from tasks.data import DatasetInfo
from tasks.datasets import FRAUD_ROWS, make_fraud
from tasks.lime_dask import lime_chunks
from tasks.lime_rows import BoosterPredictor, build_explainer, encode, explain_chunk
from tasks.row_picking import select_rows
from tasks.treeshap import explained_labels

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=ROOT / "conf" / "fraud.yaml")
    parser.add_argument("--rows", type=int, default=20, help="rows explained (multiple of 4)")
    parser.add_argument("--samples", type=int, default=5_000)
    args = parser.parse_args()
    cfg = validate_config(yaml.safe_load(args.config.read_text()))
    frame = make_fraud(cfg.data.rows or FRAUD_ROWS, seed=cfg.data.seed)
    x, y = frame.drop(columns="Class").astype("float64"), frame["Class"]
    n_test, n_valid = round(len(x) * cfg.split.test), round(len(x) * cfg.split.valid)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=n_test, random_state=cfg.split.seed, stratify=y
    )
    x_train, x_valid, y_train, y_valid = train_test_split(
        x_rest, y_rest, test_size=n_valid, random_state=cfg.split.seed, stratify=y_rest
    )
    threads = os.cpu_count() or 1
    dtrain = xgb.QuantileDMatrix(x_train, y_train, nthread=threads)
    stopping = cfg.train.early_stopping_rounds
    booster = xgb.train(
        {
            "objective": "binary:logistic",
            "nthread": threads,
            **cfg.train.params,
        },
        dtrain,
        num_boost_round=cfg.train.num_boost_round,
        evals=[(xgb.QuantileDMatrix(x_valid, y_valid, ref=dtrain), "valid")],
        callbacks=[xgb.callback.EarlyStopping(rounds=stopping, save_best=True)]
        if stopping
        else None,
        verbose_eval=False,
    )
    quarter = max(1, args.rows // 4)
    rules = ExplainConfig(
        top_risk=quarter, errors=quarter, random_rows=args.rows - 3 * quarter, seed=0
    )
    score = booster.inplace_predict(x_test)
    chosen = select_rows(x_test.index.to_numpy(), y_test.to_numpy(), score, "binary", rules)
    ids = list(dict.fromkeys(i for rows in chosen.values() for i in rows))
    rows = x_test.loc[ids]
    labels = explained_labels(booster.inplace_predict(rows), "binary")
    sample = x_train.sample(5_000, random_state=0)
    n = len(rows)
    result: dict[str, float] = {"rows": n, "trees": booster.num_boosted_rounds()}

    # Plain LIME: its own discretiser, an sklearn wrapper, one row at a time.
    clf = xgb.XGBClassifier()
    clf._Booster = booster
    clf.n_classes_ = 2
    columns = list(x.columns)
    plain = LimeTabularExplainer(
        sample.to_numpy(), feature_names=columns, class_names=["0", "1"], random_state=0
    )
    start = time.perf_counter()
    for row in rows.to_numpy():
        plain.explain_instance(
            row,
            lambda a: clf.predict_proba(pd.DataFrame(a, columns=columns)),
            num_features=10,
            num_samples=args.samples,
        )
    result["plain_s_per_row"] = (time.perf_counter() - start) / n

    # Ours, in this process, one row at a time on one thread.
    explainer = build_explainer(encode(sample, {}), columns, {}, ["0", "1"], False, 0)
    predict = BoosterPredictor(bytes(booster.save_raw("ubj")), "binary", {})
    with threadpool_limits(1):  # numpy's BLAS and XGBoost's OpenMP: one thread, as a worker
        start = time.perf_counter()
        explain_chunk(
            explainer,
            predict,
            encode(rows, {}),
            labels.tolist(),
            list(range(n)),
            seed=0,
            num_samples=args.samples,
            shown=10,
        )
        result["ours_1_thread_s_per_row"] = (time.perf_counter() - start) / n

    # Ours on Dask, as the flow runs it.
    info = DatasetInfo(
        name="fraud",
        source="builtin:fraud",
        target="Class",
        task="binary",
        features=columns,
        classes=["0", "1"],
    )
    lime_cfg = ExplainConfig(lime_samples=args.samples, lime_train_rows=5_000, seed=0)
    for workers, per_worker in ((1, 1), (1, 2), (2, 1)):
        with dask_cluster(
            ClusterConfig(kind="local", n_workers=workers, threads_per_worker=per_worker)
        ) as cluster:
            times = []
            for _ in range(2):
                start = time.perf_counter()
                chunks = lime_chunks(cluster.client, booster, x_train, rows, labels, info, lime_cfg)
                cluster.client.gather([future for future, _ in chunks])
                times.append(time.perf_counter() - start)
            cold, warm = times
        result[f"dask_{workers}x{per_worker}_s_per_row"] = warm / n
        result[f"dask_{workers}x{per_worker}_first_call_s"] = cold

    plain_row = result["plain_s_per_row"]
    print(f"{n} rows, {args.samples} samples per row, {result['trees']} trees, {threads} cores")
    print(f"{'':32}{'ms/row':>9}{'vs plain':>10}")
    for key, value in result.items():
        if key.endswith("_s_per_row"):
            name = key.removesuffix("_s_per_row")
            print(f"{name:32}{value * 1e3:9.1f}{plain_row / value:9.2f}x")
    for key, value in result.items():
        if key.endswith("_first_call_s"):
            print(f"{key:32}{value:9.2f} s (includes the workers importing LIME)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
