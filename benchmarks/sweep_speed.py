"""Trials per minute of a sweep: parallel single-threaded trials (what `glassbox sweep` runs)
against the same trials run one after another as `xgboost.dask` trainings, and as plain
`xgboost.train` with all of the worker's threads. Same configurations, same data already on the
cluster, same early stopping, one run of this script.

    .venv/bin/python benchmarks/sweep_speed.py                 # default and fraud presets
    .venv/bin/python benchmarks/sweep_speed.py --presets fraud --trials 8

Target (2 cores, small data): parallel >= 1.8x the sequential xgboost.dask rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load(preset: str) -> tuple[Any, Any, Any]:
    """The preset's train/valid splits as model inputs, without Prefect."""
    from flows.config import load_config
    from tasks.data import prepare, split_frame
    from tasks.datasets import load_source
    from tasks.trials import TrialData

    cfg = load_config(preset)
    frame, target, name = load_source(cfg.data.source, rows=cfg.data.rows, seed=cfg.data.seed)
    data, info = prepare(frame, cfg.data, default_target=target, name=name)
    parts = split_frame(data, info, cfg.split)
    dtypes = info.feature_dtypes()

    def x(part: Any) -> Any:
        return part[info.features].astype(dtypes) if dtypes else part[info.features]

    trial_data = TrialData(
        x(parts["train"]),
        parts["train"][info.target],
        x(parts["valid"]),
        parts["valid"][info.target],
    )
    return cfg, info, trial_data


def configurations(plan: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """n configurations drawn at random from the task's default space (seeded)."""
    import optuna

    from tasks.space import distributions, with_sampled

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    dists = distributions(plan.space)
    out = []
    for _ in range(n):
        trial = study.ask(dists)
        out.append(with_sampled(plan.base_params, trial.params))
        study.tell(trial, 0.0)
    return out


def parallel_trials(client: Any, data: Any, plan: Any, configs: list, parallel: int) -> list:
    """`glassbox sweep`'s way: single-threaded trials, `parallel` in flight."""
    from distributed import wait

    from tasks.trials import run_trial

    pending, running, values = list(configs), set(), []
    while pending or running:
        while pending and len(running) < parallel:
            running.add(
                client.submit(
                    run_trial,
                    data,
                    pending.pop(0),
                    task=plan.task,
                    metric=plan.metric,
                    num_boost_round=plan.num_boost_round,
                    early_stopping_rounds=plan.early_stopping_rounds,
                    pure=False,
                )
            )
        done, running = wait(running, return_when="FIRST_COMPLETED")
        values += [f.result()["value"] for f in done]
    return values


def dask_trials(client: Any, frames: tuple, plan: Any, configs: list) -> list:
    """One `xgboost.dask` training per trial, one after another (each locks every worker)."""
    import numpy as np
    import xgboost as xgb
    import xgboost.dask as dxgb
    from xgboost.collective import Config

    from tasks.trials import valid_scores

    x, y, xv, yv = frames
    values = []
    for params in configs:
        dtrain = dxgb.DaskQuantileDMatrix(client, x, y, enable_categorical=True)
        dvalid = dxgb.DaskQuantileDMatrix(client, xv, yv, ref=dtrain, enable_categorical=True)
        out = dxgb.train(
            client,
            params,
            dtrain,
            num_boost_round=plan.num_boost_round,
            evals=[(dvalid, "valid")],
            callbacks=[
                xgb.callback.EarlyStopping(rounds=plan.early_stopping_rounds, data_name="valid")
            ],
            verbose_eval=False,
            coll_cfg=Config(tracker_host_ip="127.0.0.1"),
        )
        booster = out["booster"]
        pred = dxgb.predict(
            client, booster, dvalid, iteration_range=(0, booster.best_iteration + 1)
        )
        scores = valid_scores(plan.task, np.asarray(yv.compute()), np.asarray(pred.compute()), 0.5)
        values.append(scores[plan.metric])
    return values


def threaded_trials(client: Any, data: Any, plan: Any, configs: list) -> list:
    """One plain `xgboost.train` per trial with all of the worker's threads, one after another
    (what a one-worker cluster's train path does)."""
    from tasks.trials import run_trial

    threads = next(iter(client.nthreads().values()))
    return [
        client.submit(
            run_trial,
            data,
            params,
            task=plan.task,
            metric=plan.metric,
            num_boost_round=plan.num_boost_round,
            early_stopping_rounds=plan.early_stopping_rounds,
            threads=threads,
            pure=False,
        ).result()["value"]
        for params in configs
    ]


def bench(preset: str, trials: int, seed: int) -> None:
    import dask.dataframe as dd

    from flows.sweep import plan_sweep
    from tasks.cluster import dask_cluster
    from tasks.config import ClusterConfig
    from tasks.data import Loaded

    cfg, info, data = load(preset)
    loaded = Loaded(
        data=None,  # type: ignore[arg-type]
        info=info,
        parts={"train": data.x.assign(**{info.target: data.y})},
        example=None,  # type: ignore[arg-type]
    )
    plan = plan_sweep(cfg, loaded)
    configs = configurations(plan, trials, seed)
    with dask_cluster(ClusterConfig()) as cluster:
        client = cluster.client
        threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        scattered = client.scatter(data, broadcast=True, hash=False)
        frames = tuple(
            dd.from_pandas(f, npartitions=1).persist()
            for f in (data.x, data.y, data.x_valid, data.y_valid)
        )
        client.wait_for_workers(1)
        # warm up every path once (imports, first-call costs), not timed
        parallel_trials(client, scattered, plan, configs[:1], 1)
        dask_trials(client, frames, plan, configs[:1])
        threaded_trials(client, scattered, plan, configs[:1])
        timings = {}
        for name, run in (
            (
                f"parallel single-threaded ({threads} in flight)",
                lambda: parallel_trials(client, scattered, plan, configs, threads),
            ),
            ("sequential xgboost.dask", lambda: dask_trials(client, frames, plan, configs)),
            (
                f"sequential xgb.train, {threads} threads",
                lambda: threaded_trials(client, scattered, plan, configs),
            ),
        ):
            start = time.perf_counter()
            values = run()
            seconds = time.perf_counter() - start
            timings[name] = (seconds, sorted(values))
    rows = len(data.x)
    print(
        f"\n{preset}: {rows:,} training rows, {trials} trials, valid {plan.metric}, "
        f"{os.cpu_count()} cores"
    )
    base = timings["sequential xgboost.dask"][0]
    for name, (seconds, values) in timings.items():
        rate = 60 * trials / seconds
        print(
            f"  {name:<40} {seconds:7.1f} s  {rate:7.1f} trials/min  "
            f"{base / seconds:5.2f}x the xgboost.dask rate  "
            f"(best {max(values) if plan.direction == 'maximize' else min(values):.5g})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["default", "fraud"])
    parser.add_argument("--trials", type=int, default=0, help="default: 24 (default), 8 (fraud)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for preset in args.presets:
        bench(preset, args.trials or (8 if preset == "fraud" else 24), args.seed)


if __name__ == "__main__":
    main()
