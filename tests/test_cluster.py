"""A cluster the run did not start (`cluster.kind: address`): scheduler and workers as processes
of their own, one of them in a mount namespace where the run's workspace is another (empty)
folder, as on a machine without the shared storage. The run is stopped before training, with
the key to change."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tasks.cluster import check_shared_folder, dask_cluster
from tasks.config import ClusterConfig, ConfigError

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _without(folder: Path, command: str = "true") -> list[str]:
    """`command` in a mount namespace of its own where `folder` is an empty tmpfs: a machine
    without the shared storage."""
    script = f"mount -t tmpfs none {folder} && exec {command}"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def _can_unshare(folder: Path) -> bool:
    probe = subprocess.run(_without(folder), capture_output=True)
    return probe.returncode == 0


@pytest.fixture
def two_machines(tmp_path):
    """A scheduler; a worker that shares this machine's files; a worker that does not."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    if not _can_unshare(workspace):
        pytest.skip("needs unshare --mount (root) to give a worker a file system of its own")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(BIN / "dask")
    worker = [
        dask,
        "worker",
        address,
        "--nthreads",
        "1",
        "--host",
        "127.0.0.1",
        "--dashboard-address",
        "127.0.0.1:0",
        "--no-nanny",
    ]
    procs = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            stderr=subprocess.DEVNULL,
        ),
    ]
    time.sleep(1)
    procs.append(subprocess.Popen(worker, stderr=subprocess.DEVNULL))
    # the other machine: the same path, but its own (empty) folder there
    procs.append(subprocess.Popen(_without(workspace, " ".join(worker)), stderr=subprocess.DEVNULL))
    try:
        yield address, workspace
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(30)


def test_workers_that_cannot_read_the_workspace_stop_the_run(two_machines):
    address, workspace = two_machines
    with dask_cluster(ClusterConfig(kind="address", address=address)) as handle:
        handle.client.wait_for_workers(2, timeout=60)
        with pytest.raises(ConfigError, match=r"^data\.workspace: 1 of 2 Dask workers cannot read"):
            check_shared_folder(handle, str(workspace))
        # the probe is gone; nothing else was written
        assert list(workspace.iterdir()) == []
        # both see *a* folder there: the name alone proves nothing, the probe file does
        assert all(handle.client.run(Path.is_dir, workspace).values())


def test_a_url_workspace_is_probed_on_every_worker_of_any_cluster(tmp_path):
    from tasks import storage

    shared = tmp_path / "shared"
    storage.check_writable(f"file://{shared}")  # this machine writes and reads it back
    with dask_cluster(ClusterConfig(kind="local", n_workers=2, threads_per_worker=1)) as handle:
        check_shared_folder(handle, f"file://{shared}")  # every worker reads the probe
        assert list(shared.iterdir()) == []  # and it is gone
        # memory:// lives in one process: this one writes, the workers see nothing
        storage.check_writable("memory://glassbox-ws")
        with pytest.raises(
            ConfigError, match=r"^data\.workspace: 2 of 2 Dask workers cannot read memory://"
        ):
            check_shared_folder(handle, "memory://glassbox-ws")


def test_a_url_this_machine_cannot_write_is_one_line():
    from tasks import storage

    with pytest.raises(ConfigError, match=r"^data\.workspace: cannot write to nope://bucket/x: "):
        storage.check_writable("nope://bucket/x")


def test_local_clusters_are_not_probed(tmp_path):
    with dask_cluster(ClusterConfig(kind="local", n_workers=1, threads_per_worker=1)) as handle:
        check_shared_folder(handle, str(tmp_path / "not-even-there"))


def test_each_local_cluster_gets_its_own_thread_settings():
    """Dask's Nanny writes the worker settings into this process's environment while it spawns,
    and the environment outranks the next cluster's config: two runs in one process (the test
    harness, a long-lived worker) must not inherit each other's threads."""
    import os

    def omp():
        return os.environ.get("OMP_NUM_THREADS")

    before = os.environ.get("OMP_NUM_THREADS")
    for threads in (1, 2):
        cfg = ClusterConfig(kind="local", n_workers=1, threads_per_worker=threads)
        with dask_cluster(cfg) as handle:
            assert list(handle.client.run(omp).values()) == [str(threads)]
        assert os.environ.get("OMP_NUM_THREADS") == before


def _draw_figures(n: int) -> tuple[int, int]:
    """In a worker: draw and drop `n` figures. Returns the full collections meanwhile and the
    objects frozen out of the collector's walks."""
    import gc

    from tasks import figures as figs

    full = gc.get_stats()[2]["collections"]
    for _ in range(n):
        figs.png(figs.importance({"gain": {f"feature {j}": float(j) for j in range(20)}}, 20))
    return gc.get_stats()[2]["collections"] - full, gc.get_freeze_count()


def test_workers_free_drawn_figures_without_walking_all_they_hold():
    """A figure is thousands of objects in reference cycles: a worker that draws them needs no
    full collection, which walks every imported module's objects (0.3-0.45 s each in a worker
    that has imported shap and XGBoost)."""
    cfg = ClusterConfig(kind="local", n_workers=1, threads_per_worker=1)
    with dask_cluster(cfg) as handle:
        full, frozen = handle.client.submit(_draw_figures, 16, pure=False).result()
    assert full == 0  # with Python's defaults: 1 or more
    assert frozen > 50_000  # the imports


def _native_threads() -> int:
    """In a worker: its threads that Python did not start (OpenMP's among them)."""
    import os
    import threading

    return len(os.listdir("/proc/self/task")) - len(threading.enumerate())


def _predict_from_bytes(raw: bytes, features: Any) -> Any:
    """In a worker's task thread: load a model and predict with it."""
    import xgboost as xgb

    return xgb.Booster(model_file=bytearray(raw)).inplace_predict(features)


def test_a_model_sent_to_the_workers_starts_no_openmp_threads_outside_their_tasks():
    """A worker unpickles a booster sent to it (`xgboost.dask` scatters the model it predicts
    with) in its event loop thread, in a parallel loop of the booster's threads. Given OpenMP
    threads there, the worker holds more of them than the machine has cores, and OpenMP stops
    spinning at its barriers: the standing worker that trains trained 13-19% slower per round.
    The threads that run tasks keep every core."""
    import dask.array as da
    import numpy as np
    import xgboost as xgb
    import xgboost.dask as dxgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 12))
    y = (x[:, 0] + rng.normal(size=len(x)) > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "nthread": 2, "max_depth": 4},
        xgb.DMatrix(x, y),
        num_boost_round=20,
    )
    raw = bytes(booster.save_raw("ubj"))
    # Two single-threaded workers with OpenMP at two threads each, as `glassbox up` on 2 cores.
    cfg = ClusterConfig(kind="local", n_workers=2, threads_per_worker=1)
    with dask_cluster(cfg) as handle:
        client = handle.client
        workers = list(client.scheduler_info()["workers"])
        # Each worker's task thread opens parallel regions: its OpenMP threads start.
        for w in workers:
            got = client.submit(_predict_from_bytes, raw, x[:5_000], workers=[w], pure=False)
            np.testing.assert_allclose(got.result(), booster.inplace_predict(x[:5_000]))
        before = client.run(_native_threads)
        chunks = da.from_array(x, chunks=5_000)
        for _ in range(3):
            predicted = dxgb.inplace_predict(client, booster, chunks).compute()
            np.testing.assert_allclose(predicted, booster.inplace_predict(x), rtol=1e-6)
        after = client.run(_native_threads)
    assert after == before


def _backend() -> tuple[str | None, str]:
    import os

    import matplotlib

    return os.environ.get("MPLBACKEND"), matplotlib.get_backend()


def test_workers_draw_into_files_whatever_backend_the_desktop_asks_for(monkeypatch):
    """shap's plots go through pyplot in the workers' threads: with a GUI backend (a desktop's
    MPLBACKEND, or pyplot's own pick when a display is there) they would open windows off the
    main thread, where macOS's and Tk's toolkits fail. Headless, matplotlib falls back to Agg
    by itself; what the workers are told must not depend on that."""
    monkeypatch.setenv("MPLBACKEND", "TkAgg")
    cfg = ClusterConfig(kind="local", n_workers=1, threads_per_worker=1)
    with dask_cluster(cfg) as handle:
        ((asked, used),) = handle.client.run(_backend).values()
    assert (asked, used.lower()) == ("Agg", "agg")
