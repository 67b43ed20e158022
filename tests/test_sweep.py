"""Sweeps: the space and metric checked before anything runs; a trial's value against plain
XGBoost and scikit-learn; the search reproducible with one trial in flight; a real sweep under
Prefect's test harness (child runs, the parent's best, figures, the refit as `@challenger`)."""

from __future__ import annotations

import io
import itertools
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn import metrics as skm

from flows.cli import main
from tasks.config import ConfigError, Dimension, SweepConfig
from tasks.space import DEFAULT_SPACE, check_space, resolve_metric, with_sampled
from tasks.sweep import Finished, Plan, best_so_far, best_trial, search, trial_table
from tasks.trials import TrialData, run_trial


def _cli_error(tmp_path: Path, *sets: str) -> str:
    """`glassbox sweep` with settings that must fail before Prefect or the store start."""
    db = tmp_path / "mlflow.db"
    args = ["sweep", "--set", f"tracking.uri=sqlite:///{db}"]
    for s in sets:
        args += ["--set", s]
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(args)
    assert code == 2, err.getvalue()
    assert not db.exists()  # the store was not touched
    (line,) = err.getvalue().strip().splitlines()
    return line


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "sweep.space.max_dept={type: int, low: 2, high: 5}",
            "unknown XGBoost parameter(s): max_dept",
        ),
        ("sweep.space.max_depth={type: int, low: 6, high: 2}", "low (6) must be below high (2)"),
        ("sweep.space.eta={type: float, low: 0, high: 0.3, log: true}", "log scale needs low > 0"),
        ("sweep.space.max_depth={type: int, low: 2.5, high: 6}", "whole-number low and high"),
        ("sweep.space.grow_policy={type: choice}", "needs `values`"),
        ("sweep.space.nthread={type: int, low: 1, high: 4}", "'nthread' is set from"),
        ("sweep.space.objective={type: choice, values: [binary:hinge]}", "set from the task"),
        ("sweep.space.max_depth={type: int, low: -3, high: 4}", "sweep.space.max_depth: XGBoost"),
        (
            "sweep.space={eta: {type: float, low: 0.1, high: 0.3}, "
            "learning_rate: {type: float, low: 0.1, high: 0.3}}",
            "eta and learning_rate are one parameter",
        ),
        ("sweep.trials=0", "sweep.trials"),
        ("sweep.metric=accuracy", "sweep.metric"),
    ],
)
def test_a_bad_space_fails_in_one_line_before_anything_starts(tmp_path, setting, message):
    assert message in _cli_error(tmp_path, setting)


def test_the_metric_must_fit_the_task_and_auto_is_the_gates_primary_metric():
    assert resolve_metric("auto", "binary", 0.002) == ("average_precision", "maximize")
    assert resolve_metric("auto", "binary", 0.4) == ("roc_auc", "maximize")
    assert resolve_metric("auto", "multiclass", None) == ("log_loss", "minimize")
    assert resolve_metric("auto", "regression", None) == ("root_mean_squared_error", "minimize")
    assert resolve_metric("r2_score", "regression", None) == ("r2_score", "maximize")
    with pytest.raises(
        ConfigError, match="sweep.metric: 'r2_score' does not fit the task 'binary'"
    ):
        resolve_metric("r2_score", "binary", 0.4)
    for space in DEFAULT_SPACE.values():  # the default spaces are valid XGBoost parameters
        check_space(space, {})


def test_a_sampled_alias_replaces_the_configured_parameter():
    configured = {"learning_rate": 0.1, "max_depth": 4, "reg_lambda": 2.0}
    assert with_sampled(configured, {"eta": 0.02}) == {
        "max_depth": 4,
        "reg_lambda": 2.0,
        "eta": 0.02,
    }
    assert with_sampled(configured, {"lambda": 1.0, "max_depth": 6}) == {
        "learning_rate": 0.1,
        "lambda": 1.0,
        "max_depth": 6,
    }


def test_trial_table_best_and_running_best():
    space = {"max_depth": Dimension(type="int", low=2, high=6)}
    trials = [
        Finished(2, {"max_depth": 3}, "complete", 0.7, {"rounds": 5}),
        Finished(1, {"max_depth": 2}, "complete", 0.8, {"rounds": 9}),
        Finished(3, {"max_depth": 5}, "failed", error="XGBoostError: boom"),
        Finished(4, {"max_depth": 6}, "complete", 0.8, {"rounds": 4}),
    ]
    table = trial_table(trials, space, "roc_auc")
    assert table["trial"].tolist() == [1, 2, 3, 4]
    assert table["valid_roc_auc"].tolist()[:2] == [0.8, 0.7]
    assert best_trial(trials, "maximize").number == 1  # the earliest of equals
    assert best_trial(trials, "minimize").number == 2
    assert best_so_far([0.5, None, 0.3, 0.6], "minimize") == [0.5, 0.5, 0.3, 0.3]
    assert best_so_far([0.5, None, 0.3, 0.6], "maximize") == [0.5, 0.5, 0.5, 0.6]


def _digits() -> TrialData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True, as_frame=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return TrialData(x_tr, y_tr, x_va, y_va)


def test_a_trials_value_is_sklearns_metric_at_the_best_round_of_its_curve():
    data = _digits()
    params = {
        "objective": "multi:softprob",
        "num_class": 10,
        "eval_metric": ["merror", "mlogloss"],
        "tree_method": "hist",
        "max_depth": 3,
        "learning_rate": 0.3,
        "subsample": 0.8,
    }
    out = run_trial(
        data,
        params,
        task="multiclass",
        metric="log_loss",
        num_boost_round=200,
        early_stopping_rounds=5,
    )
    curve = out["curves"]["mlogloss"]
    assert out["rounds"] == len(curve) < 200  # early stopping ended it
    best = int(np.argmin(curve))
    assert out["best_iteration"] == best and out["rounds"] == best + 6
    # plain XGBoost, trained again, scored by scikit-learn at that round
    booster = xgb.train(
        {**params, "nthread": 1},
        xgb.DMatrix(data.x, data.y),
        num_boost_round=best + 1,
    )
    proba = booster.predict(xgb.DMatrix(data.x_valid))
    assert out["value"] == pytest.approx(skm.log_loss(data.y_valid, proba), rel=1e-5)
    assert out["value"] == pytest.approx(curve[best], rel=1e-5)
    assert out["scores"]["accuracy_score"] == skm.accuracy_score(data.y_valid, proba.argmax(1))


def _plan(trials: int, seed: int) -> Plan:
    return Plan(
        task="multiclass",
        metric="log_loss",
        direction="minimize",
        space=dict(DEFAULT_SPACE["multiclass"]),
        base_params={
            "objective": "multi:softprob",
            "num_class": 10,
            "eval_metric": ["merror", "mlogloss"],
            "tree_method": "hist",
        },
        trials=trials,
        timeout=None,
        seed=seed,
        num_boost_round=40,
        early_stopping_rounds=5,
        threshold=0.5,
    )


def _recorder(seen: list[int]):
    return lambda one, best, left: seen.append(left)


def test_the_same_seed_with_one_trial_in_flight_gives_the_same_trials(cluster):
    data = cluster.client.scatter(_digits(), broadcast=True, hash=False)
    runs = []
    for seed in (3, 3, 4):
        seen: list[int] = []
        finished = search(cluster.client, data, _plan(5, seed), 1, _recorder(seen))
        assert seen == [4, 3, 2, 1, 0]  # reported one by one, trials left counting down
        runs.append([(t.number, t.params, t.value) for t in finished])
    assert runs[0] == runs[1]
    assert [p for _, p, _ in runs[0]] != [p for _, p, _ in runs[2]]


def _overlaps(finished: list[Finished]) -> int:
    spans = sorted((t.result["started_at"], t.result["ended_at"]) for t in finished)
    return sum(b[0] < a[1] for a, b in itertools.pairwise(spans))


def test_trials_run_side_by_side_up_to_parallel(cluster):
    data = cluster.client.scatter(_digits(), broadcast=True, hash=False)
    one_at_a_time = search(cluster.client, data, _plan(4, 0), 1, lambda *_: None)
    side_by_side = search(cluster.client, data, _plan(6, 0), 2, lambda *_: None)
    assert sorted(t.number for t in side_by_side) == [1, 2, 3, 4, 5, 6]
    assert all(t.state == "complete" for t in side_by_side)
    assert _overlaps(one_at_a_time) == 0
    assert _overlaps(side_by_side) >= 3  # two workers' threads busy at once


def test_a_timeout_stops_new_trials_and_lets_the_running_ones_finish(cluster):
    import dataclasses
    import time

    data = cluster.client.scatter(_digits(), broadcast=True, hash=False)
    plan = dataclasses.replace(_plan(10_000, 0), timeout=1.5)
    began = time.monotonic()
    finished = search(cluster.client, data, plan, 2, lambda *_: None)
    assert 2 <= len(finished) < 10_000
    assert time.monotonic() - began < 1.5 + max(t.result["seconds"] for t in finished) + 5
    assert all(t.state == "complete" for t in finished)  # none cut short


def test_trials_xgboost_refuses_are_failed_trials_with_the_reason(cluster):
    import dataclasses

    data = cluster.client.scatter(_digits(), broadcast=True, hash=False)
    plan = _plan(3, 0)
    plan = dataclasses.replace(plan, base_params={**plan.base_params, "num_class": 2})
    reported = []
    finished = search(cluster.client, data, plan, 2, lambda one, best, left: reported.append(best))
    assert [t.state for t in finished] == ["failed"] * 3
    assert all(t.error.startswith("XGBoostError: ") for t in finished)
    assert reported == [None, None, None]  # no best while every trial fails


# --------------------------------------------------------------------------------------------
# The flow


@pytest.fixture(scope="module")
def swept(store, prefect_harness):
    from prefect import flow

    from flows.config import load_config
    from flows.sweep import run_sweep

    cfg = load_config(
        "wine",
        {
            **store,
            "data.source": "builtin:digits",
            "train.num_boost_round": 40,
            "train.early_stopping_rounds": 5,
            "explain.enabled": False,
            "sweep.trials": 10,
            "sweep.parallel": 2,
            "cluster.threads_per_worker": 2,
        },
    )
    return flow(name="sweep-test")(run_sweep)(cfg)


def test_a_sweep_logs_a_child_run_per_trial_under_its_parent(swept, client):
    parent = client.get_run(swept["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["glassbox.sweep.role"] == "parent"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{swept['run_id']}'"
    )
    trials = [r for r in children if r.data.tags["glassbox.sweep.role"] == "trial"]
    assert len(trials) == 10 == swept["trials_finished"]
    assert all(r.info.status == "FINISHED" for r in trials)
    assert sorted(r.info.run_name for r in trials) == [f"trial-{n:03d}" for n in range(1, 11)]
    values = {int(r.data.tags["glassbox.trial"]): r.data.metrics["valid_log_loss"] for r in trials}
    # the parent's best is the best child
    best = min(values, key=lambda n: (values[n], n))
    assert parent.data.metrics["best_valid_log_loss"] == values[best] == swept["best_value"]
    assert parent.data.metrics["best_trial"] == best == swept["best_trial"]
    # each child: its parameters as numbers, its per-round valid curve, its value on that curve
    for run in trials:
        p, m = run.data.params, run.data.metrics
        assert 2 <= int(p["xgb.max_depth"]) <= 10
        assert 0.01 <= float(p["xgb.learning_rate"]) <= 0.3
        curve = [
            x.value for x in client.get_metric_history(run.info.run_id, "curves/valid-mlogloss")
        ]
        assert len(curve) == m["rounds_trained"]
        assert m["valid_log_loss"] == pytest.approx(curve[int(m["best_iteration"])], rel=1e-5)
        # the runs list shows how long the trial trained, not how long logging it took
        took = run.info.end_time - run.info.start_time
        assert took == pytest.approx(1000 * m["trial_seconds"], abs=100)
    # the parent's curve of values: one point per trial, by trial number
    history = client.get_metric_history(swept["run_id"], "sweep/valid_log_loss")
    assert {int(h.step): h.value for h in history} == values
    # the table and the figures
    files = {f.path for f in client.list_artifacts(swept["run_id"], "sweep")}
    assert files == {
        "sweep/trials.csv",
        "sweep/optimization_history.png",
        "sweep/parallel_coordinates.png",
        "sweep/slices.png",
        "sweep/param_importances.png",
    }
    import mlflow

    table = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=swept["run_id"], artifact_path="sweep/trials.csv"
        )
    )
    assert dict(zip(table["trial"], table["valid_log_loss"], strict=True)) == pytest.approx(values)


def test_the_best_trial_is_refit_registered_and_made_challenger(swept, client):
    refit = swept["refit"]
    run = client.get_run(refit["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == swept["run_id"]
    assert run.data.tags["glassbox.sweep.role"] == "refit"
    for name, value in swept["best_params"].items():
        assert float(run.data.params[f"train.params.{name}"]) == pytest.approx(value)
    # a normal Glassbox run: test metrics and figures
    assert "test_log_loss" in run.data.metrics
    assert any(f.path == "figures" for f in client.list_artifacts(refit["run_id"]))
    name, version = refit["registered_model"], refit["model_version"]
    assert str(client.get_model_version_by_alias(name, "challenger").version) == version
    assert client.get_registered_model(name).aliases.get("champion") is None  # the gate decides
    tags = client.get_model_version(name, version).tags
    assert tags["glassbox.sweep.parent_run_id"] == swept["run_id"]
    # the same configuration trained again lands on the trial's best round
    trial = client.search_runs(
        [run.info.experiment_id],
        f"tags.`glassbox.trial` = '{swept['best_trial']}' and "
        f"tags.`mlflow.parentRunId` = '{swept['run_id']}'",
    )[0]
    assert run.data.metrics["best_iteration"] == trial.data.metrics["best_iteration"]


def test_a_metric_that_does_not_fit_fails_before_any_run(store, prefect_harness, client):
    from prefect import flow

    from flows.config import load_config
    from flows.sweep import run_sweep

    cfg = load_config(
        "default", {**store, "sweep.metric": "r2_score", "tracking.experiment": "never-made"}
    )
    with pytest.raises(ConfigError, match="sweep.metric: 'r2_score' does not fit"):
        flow(name="sweep-test")(run_sweep)(cfg)
    assert client.get_experiment_by_name("never-made") is None


def test_sweep_config_defaults():
    cfg = SweepConfig()
    assert cfg.space is None and cfg.metric == "auto" and cfg.refit
