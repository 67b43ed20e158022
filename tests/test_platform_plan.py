"""The pure parts of `glassbox up`: the processes it plans, what a run takes from a running
platform, the standing workers' Dask settings, and the state file read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flows.config import load_config
from tasks import platform, platform_processes
from tasks.platform import Ports, Settings, State


def _settings(tmp_path: Path, **kw) -> Settings:
    return Settings(
        root=tmp_path,
        home=tmp_path / ".glassbox",
        store=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        artifact_root=tmp_path / "mlruns" / "artifacts",
        ports=Ports(14200, 15000, 18786, 18787),
        **kw,
    )


def _state(tmp_path: Path, processes: dict) -> State:
    return State.of(_settings(tmp_path), processes)


def test_every_part_binds_loopback_on_its_configured_port(tmp_path):
    parts = {p.name: p for p in platform.plan(_settings(tmp_path, workers=2, threads=3))}
    assert list(parts) == list(platform.PARTS)
    argv = {name: " ".join(p.argv) for name, p in parts.items()}
    assert "--host 127.0.0.1 --port 15000" in argv["mlflow"]
    assert f"--backend-store-uri sqlite:///{tmp_path}/mlruns/mlflow.db" in argv["mlflow"]
    assert "--host 127.0.0.1 --port 14200" in argv["prefect-server"]
    assert "--host 127.0.0.1 --port 18786" in argv["dask-scheduler"]
    assert "--dashboard-address 127.0.0.1:18787" in argv["dask-scheduler"]
    assert "tcp://127.0.0.1:18786 --nworkers 2 --nthreads 3 --memory-limit" in argv["dask-worker"]
    assert "--pool glassbox" in argv["prefect-worker"]
    # the UI asks the API where the server really is, not at the default port
    assert parts["prefect-server"].env["PREFECT_UI_API_URL"] == "http://127.0.0.1:14200/api"
    for part in parts.values():
        assert part.env["PREFECT_API_URL"] == "http://127.0.0.1:14200/api"
        assert part.env["GLASSBOX_HOME"] == str(tmp_path / ".glassbox")
        assert part.env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def test_the_cores_are_split_into_workers_as_dask_does_unless_told(tmp_path, monkeypatch):
    monkeypatch.setattr(platform.os, "cpu_count", lambda: 2)
    assert platform.worker_layout(_settings(tmp_path)) == (2, 1)  # figures side by side
    assert platform.worker_layout(_settings(tmp_path, workers=1)) == (1, 2)
    assert platform.worker_layout(_settings(tmp_path, threads=2)) == (1, 2)
    monkeypatch.setattr(platform.os, "cpu_count", lambda: 16)
    assert platform.worker_layout(_settings(tmp_path)) == (4, 4)
    argv = " ".join(
        next(p for p in platform.plan(_settings(tmp_path)) if p.name == "dask-worker").argv
    )
    assert "--nworkers 4 --nthreads 4 --memory-limit" in argv


def test_gpu_machines_get_dask_cuda_workers(tmp_path):
    (worker,) = [p for p in platform.plan(_settings(tmp_path, gpus=2)) if p.name == "dask-worker"]
    assert worker.argv[1:3] == ["cuda", "worker"]


def test_standing_workers_get_the_thread_settings_of_local_clusters():
    from tasks.cluster import worker_env

    config = platform.dask_config(2, 3)
    # OpenMP gets the threads of all workers: the one that trains uses them
    assert config["distributed"]["nanny"]["pre-spawn-environ"] == worker_env(3, 6)
    assert worker_env(3, 6)["OMP_NUM_THREADS"] == "6" and worker_env(3)["OMP_NUM_THREADS"] == "3"
    assert config["distributed"]["worker"]["profile"]["enabled"] is False
    assert "xgboost.dask" in config["distributed"]["worker"]["preload"]
    assert "tasks.treeshap" in config["distributed"]["worker"]["preload"]


def test_a_run_takes_the_standing_cluster_and_the_ui_address(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # no store chosen (mlflow.set_tracking_uri in earlier tests exports one)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    state = _state(tmp_path, {"dask-scheduler": {}, "mlflow": {}})
    cfg = platform.for_run(load_config("default"), state)
    assert (cfg.cluster.kind, cfg.cluster.address) == ("address", "tcp://127.0.0.1:18786")
    assert cfg.tracking.ui_url == "http://127.0.0.1:15000"
    assert cfg.tracking.uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"  # no store chosen
    assert cfg.tracking.artifact_root == str(tmp_path / "mlruns" / "artifacts")
    assert platform.for_run(load_config("default"), None) == load_config("default")


def test_a_config_that_says_otherwise_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    state = _state(tmp_path, {"dask-scheduler": {}, "mlflow": {}})
    local = platform.for_run(load_config("default", {"cluster.kind": "local"}), state)
    assert local.cluster.kind == "local"
    mine = platform.for_run(load_config("default", {"tracking.ui_url": "http://mlflow:80"}), state)
    assert mine.tracking.ui_url == "http://mlflow:80"
    # a run into another store gets no link to a UI that does not serve it
    other = platform.for_run(
        load_config("default", {"tracking.uri": f"sqlite:///{tmp_path}/other.db"}), state
    )
    assert other.tracking.ui_url is None
    assert other.cluster.kind == "address"
    # a dead scheduler is not offered
    assert platform.for_run(load_config("default"), _state(tmp_path, {})).cluster.kind == "auto"


def test_running_reports_only_live_processes_that_up_started(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert platform.running(home) is None
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    child = subprocess.Popen(argv)
    try:
        state = _state(
            tmp_path,
            {
                "mlflow": {"pid": child.pid, "args": argv[1:]},
                # same pid, another program: a recycled pid is not ours
                "dask-worker": {"pid": child.pid, "args": ["worker", "tcp://x:1"]},
                "prefect-worker": {"pid": 2**22 + 7, "args": ["worker"]},
            },
        )
        (home / platform.STATE_FILE).write_text(json.dumps(state.__dict__))
        found = platform.running(home)
        assert found is not None and list(found.processes) == ["mlflow"]
        platform_processes.stop(list(state.processes.values()), timeout=10)
        assert child.wait(5) is not None
        assert platform.running(home) is None
    finally:
        child.kill()


def test_default_store_follows_mlflow_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x/mlflow.db")
    cfg = load_config("default")
    assert cfg.tracking.uri == f"sqlite:///{tmp_path}/x/mlflow.db"
    assert cfg.tracking.artifact_folder == f"{tmp_path}/x/artifacts"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert load_config("default").tracking.artifact_folder == "mlruns/artifacts"
    assert os.environ.get("GLASSBOX_HOME")  # conftest keeps tests off a developer's platform


def test_what_workers_import_brings_neither_prefect_nor_mlflow():
    """Standing workers preload these; Prefect and MLflow would add seconds to their start and
    their memory, for nothing."""
    code = (
        "import importlib, sys\n"
        f"for m in {platform.WORKER_WARM!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('prefect', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
