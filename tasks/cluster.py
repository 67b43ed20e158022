"""The Dask cluster that trains and predicts: one context manager, built from `ClusterConfig`.

`auto` picks `LocalCUDACluster` when dask-cuda is installed and a GPU answers, else a
`LocalCluster`; `address` connects to a running scheduler. The device XGBoost uses follows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import dask
import xgboost as xgb
from distributed import Client, LocalCluster

from tasks.config import ClusterConfig, ConfigError

log = logging.getLogger(__name__)
Device = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class ClusterHandle:
    client: Client
    device: Device
    kind: str
    dashboard: str | None
    note: str | None = None  # something the run should say about the cluster


def gpu_count() -> int:
    """GPUs that NVML can see (0 without dask-cuda, drivers or GPUs)."""
    try:
        from dask_cuda.utils import get_n_gpus
    except ImportError:
        return 0
    try:
        return int(get_n_gpus())
    except Exception:  # NVML raises when there is no driver or no GPU
        return 0


def worker_env(threads: int, openmp: int | None = None) -> dict[str, str]:
    """Thread settings for worker processes.

    Dask sets `OMP_NUM_THREADS=1` in workers, which halves XGBoost's native speed (training,
    prediction, SHAP) on a 2-core machine: hand the worker's threads to OpenMP instead. They
    must be in place before the worker process starts (`pre-spawn-environ`): OpenMP reads them
    once, when it loads, so setting them in a running worker has no effect.

    Dask also sets `MALLOC_TRIM_THRESHOLD_` (to hand freed memory back to the OS), which turns
    off glibc's adaptive mmap threshold: every allocation over 128 KiB becomes an mmap/munmap
    pair with fresh page faults. LIME (5,000 x F arrays per row) ran 37% slower for it; buffers
    up to 32 MiB (glibc's maximum) now come from the heap again.

    `openmp`: OpenMP's threads when they are more than the worker's (all the machine's cores
    for the worker that trains, `one_trainer`): a worker started with fewer cannot use more.
    XGBoost's predictions on the workers are sized to the worker's threads by `xgboost.dask`.
    """
    n = str(threads)
    return {
        "OMP_NUM_THREADS": str(openmp or threads),
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
    }


def _local_config(threads: int, openmp: int | None = None) -> dict[str, Any]:
    """Dask settings for the workers of a local cluster."""
    spawn = {
        f"distributed.nanny.pre-spawn-environ.{k}": v
        for k, v in worker_env(threads, openmp).items()
    }
    # The worker's statistical profiler samples every 10 ms; with XGBoost's OpenMP threads on
    # every core, each sample stalls a parallel loop at its barrier.
    return {
        **spawn,
        "distributed.worker.profile.enabled": False,
        # Imported while the worker starts (which overlaps data loading), not by the first task;
        # `tasks.gc_tuning` sets the collector for drawing figures once they are all imported.
        "distributed.worker.preload": [
            "xgboost.dask",
            "dask.dataframe",
            "tasks.gc_tuning",
            # OpenMP only in the threads that run tasks: XGBoost trains at full speed.
            "tasks.worker_openmp",
        ],
        "logging.distributed": "warning",
    }


@contextmanager
def _environ_kept(names: dict[str, str]) -> Iterator[None]:
    """Undo what a Nanny writes into this process's environment while it spawns a worker
    (`os.environ.update(pre-spawn-environ)`): left there, it would outrank the settings of the
    next cluster this process starts (Dask lets the environment override its config)."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class WorkerProgress(xgb.callback.TrainingCallback):
    """Publishes the latest evaluation results every `every` rounds, from the worker that
    trains to clients subscribed to `topic` (`Client.subscribe_topic`).

    It lives here, not beside the training task, because workers unpickle it: its module must
    not import Prefect or MLflow (seconds of imports in every fresh worker).
    """

    def __init__(self, topic: str, every: int) -> None:
        self.topic, self.every = topic, every

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        if (epoch + 1) % self.every == 0 and xgb.collective.get_rank() == 0:
            from distributed import get_worker

            latest = {f"{d}-{m}": v[-1] for d, ms in evals_log.items() for m, v in ms.items()}
            get_worker().log_event(self.topic, {"round": epoch + 1, **latest})
        return False


def machine_memory() -> int:
    """Bytes of memory of this machine: the limit of each local CPU worker, rather than Dask's
    share per worker, since one of them holds all the training data."""
    import psutil

    return int(psutil.virtual_memory().total)


def _openmp_threads() -> str | None:
    """On a worker: the OpenMP thread count it started with."""
    return os.environ.get("OMP_NUM_THREADS")


def one_trainer(client: Client, device: str = "cpu") -> tuple[str, int] | None:
    """Where a model trains in one process: the one worker, or for CPUs the worker with the
    most threads, using the threads of every worker, when all the cluster's workers share one
    machine (the local cluster, `glassbox up`'s) and it can (OpenMP started with as many). None
    when XGBoost's collective is needed: workers on several machines, or several GPUs."""
    workers = client.scheduler_info()["workers"]
    if len(workers) == 1:
        return next(iter(workers)), 0
    if device != "cpu" or len({w["host"] for w in workers.values()}) != 1:
        return None
    address = max(workers, key=lambda a: (workers[a]["nthreads"], a))
    threads = sum(w["nthreads"] for w in workers.values())
    # OpenMP keeps the thread count a worker started with (Dask's default is 1): a worker
    # started with fewer would train on fewer than the collective would use.
    omp = client.run(_openmp_threads, workers=[address])[address]
    return (address, threads) if omp is None or int(omp) >= threads else None


def train_on_worker(
    x: Any,
    y: Any,
    x_valid: Any,
    y_valid: Any,
    params: dict[str, Any],
    num_boost_round: int,
    callbacks: list[Any],
    nthread: int = 0,
) -> dict[str, Any]:
    """`xgboost.train` on one worker with `nthread` threads (0: the worker's): the same model as
    `xgboost.dask.train` across the workers of one machine, without its collective (a tracker,
    and two sockets per worker that XGBoost binds on every address, 0.0.0.0, with no option to
    choose) and without its per-round synchronisation. The other workers of the machine are
    idle meanwhile: their threads are this one's."""
    from distributed import get_worker

    nthread = nthread or get_worker().state.nthreads
    dtrain = xgb.QuantileDMatrix(x, y, enable_categorical=True, nthread=nthread)
    dvalid = xgb.QuantileDMatrix(x_valid, y_valid, ref=dtrain, enable_categorical=True)
    history: dict[str, Any] = {}
    booster = xgb.train(
        {"nthread": nthread, **params},
        dtrain,
        num_boost_round=num_boost_round,
        evals=[(dtrain, "train"), (dvalid, "valid")],
        evals_result=history,
        callbacks=callbacks,
        verbose_eval=False,
    )
    return {"booster": booster, "history": history}


@contextmanager
def dask_cluster(cfg: ClusterConfig) -> Iterator[ClusterHandle]:
    """Start (or connect to) the cluster; close what was started on exit."""
    # The scheduler's HTTP server (health, metrics; the dashboard when asked for) always
    # listens: on loopback, on a free port, so that clusters of concurrent runs do not collide.
    http = {"dashboard_address": "127.0.0.1:0", "scheduler_kwargs": {"dashboard": cfg.dashboard}}
    # A local cluster's start/stop chatter at INFO would bury the training log.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if cfg.kind == "address":
        with Client(cfg.address, timeout="30s") as client:
            note = _refresh_platform_workers(client, cfg.address or "")
            has_gpu = any(
                w.get("resources", {}).get("GPU")
                for w in client.scheduler_info()["workers"].values()
            )
            yield ClusterHandle(
                client, "cuda" if has_gpu else "cpu", "address", client.dashboard_link, note
            )
        return

    n_gpus = gpu_count() if cfg.kind in ("auto", "cuda") else 0
    if cfg.kind == "cuda" and n_gpus == 0:
        raise ConfigError(
            "cluster.kind is 'cuda' but no GPU is usable (install the gpu extra and check "
            "nvidia-smi), or use cluster.kind 'auto'"
        )
    device: Device = "cuda" if n_gpus else "cpu"
    if n_gpus:
        from dask_cuda import LocalCUDACluster

        factory, default_workers = LocalCUDACluster, n_gpus
    else:
        factory, default_workers = partial(LocalCluster, processes=True), 1
    n_workers = cfg.n_workers or default_workers
    threads = cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // n_workers)
    # One CPU worker trains with every worker's threads (`one_trainer`), in as much memory.
    openmp, memory = (None, "auto") if n_gpus else (n_workers * threads, machine_memory())
    with dask.config.set(_local_config(threads, openmp)), _environ_kept(worker_env(threads)):
        cluster = factory(
            n_workers=n_workers,
            threads_per_worker=threads,
            host="127.0.0.1",
            memory_limit=memory,
            # Workers draw into files only: shap's plots go through pyplot, which on a desktop
            # would pick a GUI backend (macOS's, Tk) that fails off the main thread. `env`
            # outranks this process's environment (which outranks `pre-spawn-environ`); the
            # command line sets the same for the platform's workers (`flows.cli`).
            env={"MPLBACKEND": "Agg"},
            **http,
        )
    # It becomes the default client: xgboost.dask looks one up even when given a client.
    with cluster, Client(cluster) as client:
        link = client.dashboard_link if cfg.dashboard else None
        yield ClusterHandle(client, device, "cuda" if n_gpus else "local", link)


def stale_workers(started: dict[str, float], newest_source: float) -> list[str]:
    """The workers that started before the newest source file was written (pure)."""
    return sorted(w for w, t in started.items() if t < newest_source)


def _refresh_platform_workers(client: Client, address: str) -> str | None:
    """The standing workers of `glassbox up` import Glassbox's code once: after an edit to
    `flows/` or `tasks/` they would run the old code beside a flow running the new. They are
    restarted (their nanny starts them again, with the new code) when nothing else uses the
    cluster; otherwise the run is told. Returns what the run should say, if anything."""
    from tasks import platform, runner

    state = platform.running()
    if state is None or state.scheduler != address or "dask-worker" not in state.processes:
        return None  # not the platform's workers: their code is theirs
    import psutil

    newest, edited = max((f.stat().st_mtime, f.name) for f in runner.sources())
    # The workers are processes of this machine; asked for nothing of Glassbox's (their copy
    # of it may be the old one).
    started = {w: psutil.Process(pid).create_time() for w, pid in client.run(os.getpid).items()}
    if not stale_workers(started, newest):
        return None

    def others_on(dask_scheduler: Any) -> bool:
        """Another client is connected, or tasks are held (sent by value: the scheduler
        imports nothing of Glassbox's)."""
        clients = [c for c in dask_scheduler.clients if c != "fire-and-forget"]
        return len(clients) > 1 or bool(dask_scheduler.tasks)

    if client.run_on_scheduler(others_on):
        return (
            f"The standing Dask workers run code older than {edited} and another run is using "
            "them: this run's steps on the workers use the old code (`glassbox down && "
            "glassbox up` when the cluster is idle)"
        )
    import time

    start = time.monotonic()
    client.restart(wait_for_workers=True)
    return (
        f"Restarted the standing Dask workers: they ran code older than {edited} "
        f"({time.monotonic() - start:.1f} s)"
    )


@contextmanager
def background_cluster(cfg: ClusterConfig) -> Iterator[Future[ClusterHandle]]:
    """`dask_cluster`, started in a background thread: yields a future of the handle, so that
    worker processes start while the caller does other work; closes the cluster on exit.
    """
    manager = dask_cluster(cfg)
    # One thread enters and exits: the Dask client keeps context variables of the thread that
    # opened it.
    with ThreadPoolExecutor(1, thread_name_prefix="dask-cluster") as pool:
        starting = pool.submit(manager.__enter__)
        try:
            yield starting
        finally:
            if starting.exception() is None:  # waits for the start; a failed start left nothing
                pool.submit(manager.__exit__, None, None, None).result()


def check_shared_folder(handle: ClusterHandle, folder: str) -> None:
    """Workers read the run's splits from `folder`: check that every one of them sees a file
    written there now (a folder of the same name on another machine is not enough; a URL whose
    protocol a worker lacks, or `memory://`, which is per process, fails too), before anything
    trains. A local folder with a local cluster needs no check.

    Raises:
        ConfigError: naming the workers that cannot read it and the key to change.
    """
    from tasks import storage

    if handle.kind != "address" and not storage.is_url(folder):
        return  # local workers share this machine's file system
    if not storage.is_url(folder):
        folder = os.path.abspath(folder)
    probe = storage.write_probe(folder)
    try:
        seen = handle.client.run(storage.sees, probe)
    finally:
        storage.remove_file(probe)
    blind = sorted(worker for worker, ok in seen.items() if not ok)
    if blind:
        raise ConfigError(
            f"data.workspace: {len(blind)} of {len(seen)} Dask workers cannot read "
            f"{folder} ({', '.join(blind[:3])}{', ...' if len(blind) > 3 else ''})"
            "; set data.workspace to storage shared by this machine and every worker "
            "(a folder mounted at the same path everywhere, or an fsspec URL such as s3://...)"
        )
