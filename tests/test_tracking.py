from __future__ import annotations

import pytest

from tasks import tracking
from tasks.config import TrackingConfig


def test_flatten_gives_dotted_keys():
    assert tracking.flatten({"train": {"params": {"eta": 0.1}, "rounds": 5}, "empty": {}}) == {
        "train.params.eta": 0.1,
        "train.rounds": 5,
        "empty": {},
    }


def test_history_is_one_point_per_round_in_batches(client, store):
    cfg = TrackingConfig(uri=store["tracking.uri"], artifact_root=store["tracking.artifact_root"])
    history = {
        "train": {"logloss": [0.5 - i * 1e-4 for i in range(1500)]},
        "valid": {"logloss": [0.6] * 1500},
    }
    with tracking.mlflow_run(cfg, experiment="t-history", run_name=None, tags={}) as run:
        tracking.log_history(run.run_id, history)
    points = client.get_metric_history(run.run_id, "curves/train-logloss")
    assert [p.step for p in points] == list(range(1500))
    assert points[10].value == pytest.approx(0.499)
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_a_failing_run_ends_failed_with_the_reason_and_keeps_what_was_logged(client, store):
    cfg = TrackingConfig(uri=store["tracking.uri"], artifact_root=store["tracking.artifact_root"])
    with (
        pytest.raises(RuntimeError),
        tracking.mlflow_run(cfg, experiment="t-fail", run_name="r", tags={"k": "v"}) as run,
    ):
        tracking.log_params(run.run_id, {"train.num_boost_round": 5})
        raise RuntimeError("the cluster went away")
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags[tracking.FAILURE_TAG] == "RuntimeError: the cluster went away"
    assert got.data.params == {"train.num_boost_round": "5"} and got.data.tags["k"] == "v"


def test_crash_hook_helper_ends_runs_of_a_flow_run(client, store):
    cfg = TrackingConfig(uri=store["tracking.uri"], artifact_root=store["tracking.artifact_root"])
    exp = client.create_experiment("t-crash")
    run = client.create_run(exp, tags={tracking.PREFECT_RUN_TAG: "fr-123"})
    other = client.create_run(exp, tags={tracking.PREFECT_RUN_TAG: "fr-999"})
    assert tracking.mark_failed("fr-123", "Prefect flow run Crashed") == [run.info.run_id]
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"
    del cfg


def test_ui_link_when_an_mlflow_server_is_known(client, store):
    cfg = TrackingConfig(
        uri=store["tracking.uri"],
        artifact_root=store["tracking.artifact_root"],
        ui_url="http://127.0.0.1:5000/",
    )
    with tracking.mlflow_run(cfg, experiment="t-link", run_name=None, tags={}) as run:
        pass
    assert run.url == f"http://127.0.0.1:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}"


def test_unique_slug_gives_ids_that_slug_alike_names_of_their_own():
    from tasks.names import unique_slug

    names = {unique_slug(i) for i in ("x/1", "x_1", "x 1", "x:1", "x_1")}
    assert len(names) == 4 and "x_1" in names  # a safe id stays as it is
    assert unique_slug("x/1").startswith("x_1-") and unique_slug("x/1") == unique_slug("x/1")


def test_runs_that_log_the_same_data_set_at_once_all_keep_it(tmp_path):
    """MLflow's sqlite store looks a data set up, then inserts it: runs logging the same one
    at once race for its unique key. Every run must end up with the data set as its input."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from tasks import tracking
    from tasks.config import TrackingConfig

    tracking.configure(TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db"))
    client = MlflowClient()
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 5)), columns=list("abcde"))
    for round_ in range(5):
        exp = client.create_experiment(f"race-{round_}")
        runs = [client.create_run(exp).info.run_id for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(
                lambda r: tracking.log_dataset(r, frame, name="d", source="builtin:x", target="e"),
                runs,
            ))  # fmt: skip
        for run_id in runs:
            assert len(client.get_run(run_id).inputs.dataset_inputs) == 1
