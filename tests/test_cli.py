"""The `glassbox` command as a user runs it: a real process, a real Prefect API."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import GLASSBOX, ROOT


@pytest.fixture(scope="module")
def api_env(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}


def _glassbox(*args: str, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GLASSBOX, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_bad_config_key_fails_in_one_line_before_anything_starts():
    out = _glassbox("train", "--set", "train.num_boost_roun=5")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "glassbox: invalid config: train.num_boost_roun: unknown key "
        "(did you mean 'num_boost_round'?)"
    )
    assert "Prefect" not in out.stdout + out.stderr


def test_unknown_preset_is_one_line():
    out = _glassbox("train", "nope")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "neither a preset" in out.stderr


def _tracking_args(store):
    return [a for k, v in store.items() for a in ("--set", f"{k}={v}")]


def test_data_error_inside_the_flow_is_one_line_without_traceback(api_env, store):
    """An error only the loaded data shows (the positive class is not a label)."""
    out = _glassbox(
        "train",
        "fraud",
        "--set",
        "data.positive_class=fraud",
        "--set",
        "data.rows=2000",
        *_tracking_args(store),
        env=api_env,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("glassbox: data.positive_class 'fraud' is not a label of 'Class'"), last


def test_train_prints_the_run_id_and_where_to_look(api_env, store, client):
    out = _glassbox(
        "train",
        "conf/default.yaml",
        "--set",
        "train.num_boost_round=5",
        *_tracking_args(store),
        env=api_env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("MLflow run: "))
    run_id = line.split()[2]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert f"/runs/{run_id}" in out.stdout and "mlflow ui --backend-store-uri" in out.stdout


def test_a_bad_data_source_is_one_line_before_prefect_starts(tmp_path):
    """Header-level errors need no Prefect server, cluster or MLflow store: the CLI reports them
    in one line and the store folder is never created."""
    import subprocess

    csv_path = tmp_path / "cars.csv"
    csv_path.write_text("Name,MPG,Year\nvw,31,1980-01-01\nford,18,1970-01-01\n")
    store = tmp_path / "store"
    cases = [
        (["--set", f"data.source={tmp_path}/nope.csv", "--set", "data.target=y"], "file not found"),
        (["--set", f"data.source={csv_path}", "--set", "data.target=mpg"], "'mpg' is not a column"),
        (["--set", f"data.source={csv_path}"], "data.target is required"),
        (
            [
                "--set",
                f"data.source={csv_path}",
                "--set",
                "data.target=MPG",
                "--set",
                "data.columns.Nme=drop",
            ],
            "data.columns: 'Nme' is not a column; did you mean 'Name'",
        ),
        # A built-in data set's columns are known without generating it.
        (
            ["--set", "data.source=builtin:fraud", "--set", "data.target=Clas"],
            "data.target: 'Clas' is not a column; did you mean 'Class'? (columns: Time, V1,",
        ),
    ]
    for args, message in cases:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "flows.cli",
                "train",
                *args,
                "--set",
                f"tracking.uri=sqlite:///{store}/mlflow.db",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr
        assert "Prefect" not in done.stdout + done.stderr
    assert not store.exists()


def test_the_summary_names_the_registered_model_uri_to_load():
    from flows.summaries import train_summary

    text = train_summary(
        {
            "run_id": "abc",
            "experiment_id": "4",
            "registered_model": "glassbox-cars",
            "model_version": "3",
            "model_uri": "models:/m-123",
            "headline": {"test_r2_score": 0.9},
            "url": None,
        },
        "sqlite:///mlruns/mlflow.db",
    )
    assert "Model: models:/glassbox-cars/3 " in text


def test_lifecycle_commands_fail_in_one_line_before_prefect_starts(tmp_path):
    out = _glassbox("retrain", "--set", "retrain.guardrails={roc_acu: 0.01}")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "unknown metric 'roc_acu' (did you mean 'roc_auc'?" in out.stderr
    out = _glassbox("retrain", "--set", "data.inject.shift={nope: 1.0}")
    assert out.returncode == 2 and "data.inject.shift: 'nope' is not a column" in out.stderr
    out = _glassbox("promote", "someone-elses-model", "3")
    assert out.returncode == 2 and "no preset registers 'someone-elses-model'" in out.stderr
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = _glassbox("models", "nope", "--set", f"tracking.uri={uri}")
    assert out.returncode == 2 and "no registered model 'nope'" in out.stderr
    assert "Prefect" not in out.stdout + out.stderr


def test_retrain_dry_run_from_the_terminal_moves_no_alias(api_env, store, client):
    args = [*_tracking_args(store), "--set", "explain.enabled=false"]
    out = _glassbox("retrain", "--dry-run", *args, env=api_env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "would promote (dry run)" in out.stdout  # no champion yet: it would be the first
    assert "glassbox models glassbox-breast_cancer" in out.stdout
    assert client.get_registered_model("glassbox-breast_cancer").aliases == {}
    listing = _glassbox("models", "glassbox-breast_cancer", *args)
    assert listing.returncode == 0 and "would promote (dry run)" in listing.stdout


def test_a_store_that_cannot_be_used_is_one_line_in_seconds(tmp_path):
    """An MLflow server that does not answer, an artifact folder that is a file, and an
    existing experiment whose artifacts live elsewhere: one line each, before Prefect starts
    or a run exists."""
    import socket
    import time

    from mlflow import MlflowClient

    from tasks import tracking
    from tasks.config import TrackingConfig

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    store = f"sqlite:///{tmp_path}/store/mlflow.db"
    tracking.configure(TrackingConfig(uri=store, artifact_root=str(tmp_path / "first")))
    MlflowClient().create_experiment(
        "glassbox-breast_cancer", artifact_location=(tmp_path / "first").as_uri()
    )
    cases = [
        (
            [f"tracking.uri=http://127.0.0.1:{closed}"],
            f"tracking.uri: no MLflow server answers at http://127.0.0.1:{closed}",
        ),
        ([f"tracking.artifact_root={a_file}"], f"tracking.artifact_root: {a_file} is a file"),
        (
            [f"tracking.uri={store}", f"tracking.artifact_root={tmp_path / 'second'}"],
            "tracking.artifact_root: experiment 'glassbox-breast_cancer' keeps its artifacts in "
            f"{(tmp_path / 'first').as_uri()}, not {tmp_path / 'second'}",
        ),
    ]
    for sets, message in cases:
        began = time.monotonic()
        out = _glassbox("train", *(a for kv in sets for a in ("--set", kv)))
        took = time.monotonic() - began
        assert out.returncode == 2, out.stderr[-2000:]
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"glassbox: {message}"), out.stderr
        assert took < 30, f"{took:.0f} s"  # was 263 s for the server that does not answer
    assert not (tmp_path / "second").exists()
    assert [
        r.info.run_id
        for r in MlflowClient().search_runs(
            [MlflowClient().get_experiment_by_name("glassbox-breast_cancer").experiment_id]
        )
    ] == []
