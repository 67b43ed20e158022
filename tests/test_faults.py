"""Faults, as they happen to users: processes started together, signals, dead processes. Real
`glassbox` processes, real stores, real signals."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import GLASSBOX, ROOT, in_terminal

pytestmark = pytest.mark.faults


def test_four_runs_started_together_into_a_fresh_store_all_finish_with_every_point(tmp_path):
    """Each run starts its own temporary Prefect server and opens the same new sqlite store:
    the first-time migration is done once, under a lock, and the experiment made once."""
    from mlflow import MlflowClient

    from tasks import tracking
    from tasks.config import TrackingConfig

    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL",)}
    rounds = 30
    sets = {
        "tracking.uri": store,
        "tracking.artifact_root": str(tmp_path / "artifacts"),
        "data.workspace": str(tmp_path / "workspace"),
        "train.num_boost_round": rounds,
        "train.early_stopping_rounds": "null",
        "explain.enabled": "false",
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    procs = [
        subprocess.Popen(
            [GLASSBOX, "train", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n\n".join(o[-3000:] for o in outs)

    tracking.configure(TrackingConfig(uri=store))
    client = MlflowClient()
    [exp] = [e for e in client.search_experiments() if e.name == "glassbox-breast_cancer"]
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "curves/valid-logloss")]
        assert sorted(steps) == list(range(rounds))
    versions = client.search_model_versions("name = 'glassbox-breast_cancer'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    assert {v.run_id for v in versions} == {r.info.run_id for r in runs}


def _marked_processes(mark: str) -> list:
    """Processes (any parent) started with this test's marker in their environment."""
    import psutil

    out = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("GLASSBOX_TEST_MARK") == mark:
                out.append(proc)
        except psutil.Error:
            continue
    return out


def _training(tmp_path, mark: str) -> tuple[subprocess.Popen, list[str]]:
    """`glassbox train` in a session of its own (as a terminal runs it), stopped at nothing:
    returned once it is training (its cluster and temporary Prefect server are up)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["GLASSBOX_TEST_MARK"] = mark
    sets = [
        *_sets(tmp_path),
        *("--set", "train.num_boost_round=5000", "--set", "train.early_stopping_rounds=null"),
        *("--set", "data.rows=60000"),
    ]
    return in_terminal(["train", "fraud", *sets], env, "round 25:")


def _sets(tmp_path) -> list[str]:
    sets = {
        "tracking.uri": f"sqlite:///{tmp_path}/mlflow.db",
        "tracking.artifact_root": str(tmp_path / "artifacts"),
        "data.workspace": str(tmp_path / "workspace"),
    }
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def _runs(tmp_path) -> list:
    from mlflow import MlflowClient

    from tasks import tracking
    from tasks.config import TrackingConfig

    tracking.configure(TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db"))
    client = MlflowClient()
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize(
    ("signal_name", "status", "reason"),
    [
        ("SIGINT", "KILLED", "interrupted (Ctrl-C, SIGINT)"),
        ("SIGTERM", "FAILED", "terminated by SIGTERM"),
    ],
)
def test_ctrl_c_and_sigterm_end_the_run_in_seconds_and_leave_nothing(
    tmp_path, signal_name, status, reason
):
    """Ctrl-C reaches the terminal's whole process group; SIGTERM (a scheduler, `kill`) only
    the command. Either way: the run ends with the reason, the workspace goes, no process of
    the run is left (was: ~150 s, then a connection error, and an orphaned Prefect server)."""
    import signal
    import time
    import uuid

    mark = uuid.uuid4().hex
    proc, _ = _training(tmp_path, mark)
    assert len(_marked_processes(mark)) >= 3  # the command, its Prefect server, Dask
    began = time.monotonic()
    if signal_name == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    took = time.monotonic() - began
    assert took < 30, f"{took:.0f} s"
    if signal_name == "SIGINT":
        assert proc.returncode == 130, rest[-3000:]
        assert rest.strip().splitlines()[-1].startswith("glassbox: interrupted"), rest[-3000:]
    time.sleep(2)
    assert _marked_processes(mark) == []
    [run] = _runs(tmp_path)
    assert run.info.status == status
    assert run.data.tags["glassbox.failure_reason"] == reason
    assert list((tmp_path / "workspace").iterdir()) == []


def test_ctrl_c_in_a_sweep_keeps_the_finished_trials_and_leaves_nothing(tmp_path):
    """Ctrl-C while trials train: the trials in flight stop, the finished ones stay as
    FINISHED child runs, the sweep's run ends KILLED, nothing is registered, no process of the
    command (its own Prefect server, its Dask cluster) is left."""
    import signal
    import time
    import uuid

    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["GLASSBOX_TEST_MARK"] = mark
    sets = [
        *_sets(tmp_path),
        *("--set", "train.num_boost_round=3000", "--set", "train.early_stopping_rounds=null"),
        *("--set", "data.rows=40000", "--set", "explain.enabled=false"),
    ]
    proc, seen = in_terminal(["sweep", "fraud", "--trials", "100", *sets], env, " left", times=2)
    assert not any("Starting temporary server" in line for line in seen)  # the command's own
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest[-3000:]
    assert "the finished trials are kept" in rest.strip().splitlines()[-1]
    time.sleep(2)
    assert _marked_processes(mark) == []
    runs = _runs(tmp_path)
    [parent] = [r for r in runs if r.data.tags.get("glassbox.sweep.role") == "parent"]
    assert parent.info.status == "KILLED"
    assert parent.data.tags["glassbox.failure_reason"] == "interrupted (Ctrl-C, SIGINT)"
    trials = [r for r in runs if r.data.tags.get("glassbox.sweep.role") == "trial"]
    assert len(trials) >= 2 and {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.metrics["rounds_trained"] for r in trials} == {3000}
    assert len(runs) == len(trials) + 1  # no refit


def test_after_kill_9_no_process_is_left_and_the_next_run_cleans_up(tmp_path):
    """kill -9 runs no handler: the command's children die with it (the Prefect server by the
    parent-death signal), and the next run ends the orphaned MLflow run FAILED and removes
    its workspace."""
    import signal
    import time
    import uuid

    mark = uuid.uuid4().hex
    proc, _ = _training(tmp_path, mark)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while _marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _marked_processes(mark) == []
    [killed] = _runs(tmp_path)
    assert killed.info.status == "RUNNING"
    assert len(list((tmp_path / "workspace").iterdir())) == 1

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    quick = ["--set", "train.num_boost_round=5", "--set", "explain.enabled=false"]
    done = subprocess.run(
        [GLASSBOX, "train", *_sets(tmp_path), *quick],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {r.info.run_id: r for r in _runs(tmp_path)}
    ended = runs[killed.info.run_id]
    assert ended.info.status == "FAILED"
    assert "died without ending it" in ended.data.tags["glassbox.failure_reason"]
    assert list((tmp_path / "workspace").iterdir()) == []


def test_while_training_every_listening_socket_of_the_run_is_on_loopback(tmp_path):
    """The command, its Prefect server and its Dask scheduler and worker, mid-training: no
    socket another machine can reach (XGBoost's collective binds its worker sockets on
    0.0.0.0; a one-worker cluster trains without it)."""
    import signal
    import uuid

    import psutil

    mark = uuid.uuid4().hex
    proc, _ = _training(tmp_path, mark)
    try:
        listening = [
            (p.pid, c.laddr)
            for p in _marked_processes(mark)
            for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        ]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=120)
    assert len({pid for pid, _ in listening}) >= 3, listening  # command, server, worker
    assert all(addr.ip == "127.0.0.1" for _, addr in listening), listening
