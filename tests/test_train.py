from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tasks.cluster import dask_cluster, worker_env
from tasks.config import ClusterConfig, ConfigError
from tasks.train import IMBALANCE, best_iteration, fit, xgb_params
from tasks.xgb_checks import check_params


def _dask(n: int, seed: int, npartitions: int = 2):
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, 4)), columns=list("abcd"))
    y = pd.Series((x["a"] + 0.5 * x["b"] + rng.normal(0, 0.7, n) > 0).astype(int), name="y")
    return dd.from_pandas(x, npartitions=npartitions), dd.from_pandas(y, npartitions=npartitions)


def _small_fit(handle, rounds: int, user=None, sizes=(2_000, 500), **fit_kwargs):
    params = xgb_params("binary", 2, user or {"max_depth": 3}, device=handle.device, eval_auc=False)
    fit_kwargs.setdefault("early_stopping_rounds", None)
    return fit(
        handle.client,
        _dask(sizes[0], 4),
        _dask(sizes[1], 5),
        params,
        num_boost_round=rounds,
        **fit_kwargs,
    )


def test_task_defaults_then_user_params():
    p = xgb_params("multiclass", 3, {"max_depth": 3}, device="cpu", eval_auc=False)
    assert (p["objective"], p["num_class"], p["eval_metric"]) == (
        "multi:softprob",
        3,
        ["merror", "mlogloss"],
    )
    p = xgb_params(
        "regression", 0, {"objective": "reg:absoluteerror"}, device="cuda", eval_auc=True
    )
    assert p["objective"] == "reg:absoluteerror" and p["device"] == "cuda"
    assert p["eval_metric"] == ["mae", "rmse"]  # no per-round AUC for regression


def test_auc_per_round_only_when_asked_and_loss_stays_last_for_early_stopping():
    assert "auc" not in xgb_params("binary", 2, {}, device="cpu", eval_auc=False)["eval_metric"]
    assert xgb_params("binary", 2, {}, device="cpu", eval_auc=True)["eval_metric"] == [
        "error",
        "auc",
        "logloss",
    ]


def test_imbalanced_binary_gets_scale_pos_weight_only_when_asked():
    default = xgb_params("binary", 2, {}, device="cpu", eval_auc=False, positive_share=0.002)
    assert "scale_pos_weight" not in default  # reweighting distorts probabilities
    p = xgb_params(
        "binary",
        2,
        {},
        device="cpu",
        eval_auc=False,
        positive_share=0.002,
        auto_scale_pos_weight=True,
    )
    assert p["scale_pos_weight"] == pytest.approx(499)
    balanced = xgb_params(
        "binary",
        2,
        {},
        device="cpu",
        eval_auc=False,
        positive_share=IMBALANCE + 0.2,
        auto_scale_pos_weight=True,
    )
    assert "scale_pos_weight" not in balanced
    mine = xgb_params(
        "binary", 2, {"scale_pos_weight": 3}, device="cpu", eval_auc=False, positive_share=0.002
    )
    assert mine["scale_pos_weight"] == 3
    off = xgb_params(
        "binary",
        2,
        {},
        device="cpu",
        eval_auc=False,
        positive_share=0.002,
        auto_scale_pos_weight=False,
    )
    assert "scale_pos_weight" not in off


def test_xgboost_itself_names_unknown_or_bad_params():
    check_params({"max_depth": 4, "learning_rate": 0.1, "subsample": 0.8})
    with pytest.raises(ConfigError, match="unknown XGBoost parameter\\(s\\): max_dpth"):
        check_params({"max_dpth": 4})
    with pytest.raises(ConfigError, match="XGBoost refuses them: .*max_depth"):
        check_params({"max_depth": "deep"})
    with pytest.raises(ConfigError, match="'nthread' is set from the Dask worker's threads"):
        check_params({"nthread": 8})


def test_workers_get_their_threads_for_openmp(cluster):
    import os

    assert cluster.device == "cpu" and cluster.kind == "local"
    env = cluster.client.run(lambda: os.environ.get("OMP_NUM_THREADS"))
    assert list(env.values()) == ["2"]
    assert worker_env(3)["OMP_NUM_THREADS"] == "3"


def test_fit_evaluates_train_and_valid_every_round_and_reports_progress(cluster):
    events = []
    booster, history = _small_fit(cluster, 30, progress=events.append, progress_every=10)
    assert set(history) == {"train", "valid"}
    for data in ("train", "valid"):
        assert {m: len(v) for m, v in history[data].items()} == {"error": 30, "logloss": 30}
    assert booster.num_boosted_rounds() == 30 and best_iteration(booster, history) == 29
    assert history["train"]["logloss"][-1] < history["train"]["logloss"][0]
    import time

    deadline = time.time() + 5
    while len(events) < 3 and time.time() < deadline:  # events arrive through the scheduler
        time.sleep(0.05)
    assert [e["round"] for e in events] == [10, 20, 30]
    assert events[-1]["valid-logloss"] == pytest.approx(history["valid"]["logloss"][-1])


def test_the_workers_of_one_machine_train_in_one_of_them_with_all_their_threads():
    """Two single-threaded local workers (`glassbox up` on 2 cores): one trains with 2 threads
    (OpenMP was started with them), the same model as plain `xgb.train` on the rows in order."""
    import os

    from tasks.cluster import one_trainer

    with dask_cluster(ClusterConfig(kind="local", n_workers=2, threads_per_worker=1)) as handle:
        params = xgb_params("binary", 2, {"max_depth": 4}, device="cpu", eval_auc=False)
        address, nthread = one_trainer(handle.client)
        assert nthread == 2 and address in handle.client.scheduler_info()["workers"]
        omp = handle.client.run(lambda: os.environ.get("OMP_NUM_THREADS"))
        assert list(omp.values()) == ["2", "2"]
        train, valid = _dask(20_000, 4, npartitions=3), _dask(3_000, 5, npartitions=2)
        booster, history = fit(
            handle.client, train, valid, params, num_boost_round=40, early_stopping_rounds=None
        )
        assert one_trainer(handle.client, "cuda") is None  # GPUs train with the collective
    # Dask's own workers start OpenMP with one thread: the collective then uses more
    with dask_cluster(ClusterConfig(kind="local", n_workers=2, threads_per_worker=1)) as other:
        other.client.run(lambda: os.environ.update(OMP_NUM_THREADS="1"))
        assert one_trainer(other.client) is None
    x, y = (c.compute() for c in train)
    xv, yv = (c.compute() for c in valid)
    dtrain = xgb.QuantileDMatrix(x, y, nthread=2)
    plain: dict = {}
    expected = xgb.train(
        {**params, "nthread": 2},
        dtrain,
        40,
        evals=[(dtrain, "train"), (xgb.QuantileDMatrix(xv, yv, ref=dtrain), "valid")],
        evals_result=plain,
        verbose_eval=False,
    )
    assert history == plain
    np.testing.assert_array_equal(booster.inplace_predict(xv), expected.inplace_predict(xv))


def test_early_stopping_keeps_the_best_round(cluster):
    booster, history = _small_fit(
        cluster, 300, {"max_depth": 6, "learning_rate": 0.8}, (300, 300), early_stopping_rounds=5
    )
    rounds = len(history["valid"]["logloss"])
    best = best_iteration(booster, history)
    assert rounds < 300 and rounds == best + 6
    assert history["valid"]["logloss"][best] == min(history["valid"]["logloss"])
    assert booster.num_boosted_rounds() == best + 1


def test_an_existing_scheduler_can_be_used_by_address():
    from distributed import LocalCluster

    from tasks.cluster import _environ_kept, worker_env

    # A plain LocalCluster's Nanny leaves its worker settings in this process's environment
    # (what `dask_cluster` undoes); later tests' clusters must not inherit them.
    with (
        _environ_kept(worker_env(1)),
        LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as running,
    ):
        cfg = ClusterConfig(kind="address", address=running.scheduler_address)
        with dask_cluster(cfg) as handle:
            assert (handle.kind, handle.device) == ("address", "cpu")
            _, history = _small_fit(handle, rounds=5)
            assert len(history["valid"]["logloss"]) == 5
        assert len(running.scheduler_info["workers"]) == 1  # their cluster stays up


def test_cuda_without_a_gpu_is_a_clear_error():
    from tasks.cluster import gpu_count

    if gpu_count():
        pytest.skip("a GPU is present")
    with (
        pytest.raises(ConfigError, match="cluster.kind is 'cuda' but no GPU is usable"),
        dask_cluster(ClusterConfig(kind="cuda")),
    ):
        pass


@pytest.mark.gpu
def test_auto_cluster_trains_on_the_gpu():
    from tasks.cluster import gpu_count

    if not gpu_count():
        pytest.skip("no GPU (or dask-cuda) here")
    with dask_cluster(ClusterConfig(dashboard=False)) as handle:
        assert (handle.kind, handle.device) == ("cuda", "cuda")
        booster, history = _small_fit(handle, rounds=20)
        import json

        config = json.loads(booster.save_config())
        assert config["learner"]["generic_param"]["device"].startswith("cuda")
        assert len(history["train"]["logloss"]) == 20


def test_dashboard_on_request_is_the_real_one_on_loopback():
    import urllib.request

    with dask_cluster(ClusterConfig(n_workers=1, threads_per_worker=1, dashboard=True)) as handle:
        assert handle.dashboard.startswith("http://127.0.0.1:")
        page = urllib.request.urlopen(handle.dashboard, timeout=10).read().decode()
        assert "<title>Dask" in page and "needs bokeh" not in page


def test_an_objective_that_contradicts_the_task_is_refused_naming_both():
    from tasks.xgb_checks import check_objective

    with pytest.raises(
        ConfigError,
        match="objective 'reg:squarederror' does not fit the task 'binary' .objectives for "
        "binary: binary:logistic",
    ):
        check_objective("binary", {"objective": "reg:squarederror"})
    with pytest.raises(ConfigError, match="'multi:softmax' does not fit the task 'multiclass'"):
        check_objective("multiclass", {"objective": "multi:softmax"})  # labels, not probabilities
    check_objective("regression", {"objective": "count:poisson"})
    check_objective("binary", {})  # the task's own default
    check_objective("auto", {"objective": "reg:squarederror"})  # decided once the data is read


def test_platt_map_is_recovered_and_keeps_shap_values_additive():
    from tasks.calibration import fit_platt

    rng = np.random.default_rng(0)
    margin = rng.normal(0, 2, 40_000)
    y = (rng.uniform(size=margin.size) < 1 / (1 + np.exp(-(0.5 * margin - 1.0)))).astype(int)
    platt = fit_platt(margin, y)
    assert platt.slope == pytest.approx(0.5, abs=0.03)
    assert platt.intercept == pytest.approx(-1.0, abs=0.05)
    contribs = rng.normal(size=(20, 3, 5))  # (rows, classes-or-not, features + base)
    mapped = platt.contributions(contribs)
    np.testing.assert_allclose(mapped.sum(-1), platt.log_odds(contribs.sum(-1)))
    np.testing.assert_allclose(mapped[..., :-1], 0.5 * contribs[..., :-1], rtol=0.1)


def test_training_on_a_local_cluster_listens_on_loopback_only(cluster):
    """XGBoost's collective tracker binds the machine's external address unless told: sample
    the listening sockets of this process (scheduler, client, tracker) while it trains."""
    import threading
    import time

    import psutil

    seen: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not done.is_set():
            seen.update(
                c.laddr.ip for c in me.net_connections("inet") if c.status == psutil.CONN_LISTEN
            )
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        fit(
            cluster.client,
            _dask(60_000, 0),
            _dask(2_000, 1),
            {"objective": "binary:logistic", "tree_method": "hist"},
            num_boost_round=60,
            early_stopping_rounds=None,
        )
    finally:
        done.set()
        sampler.join()
    assert seen and seen <= {"127.0.0.1", "::1"}
