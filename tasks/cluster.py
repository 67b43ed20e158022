"""The Dask cluster that trains and predicts: one context manager, built from `ClusterConfig`.

`auto` picks `LocalCUDACluster` when dask-cuda is installed and a GPU answers, else a
`LocalCluster`; `address` connects to a running scheduler. The device XGBoost uses follows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

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


def worker_env(threads: int) -> dict[str, str]:
    """Thread settings for worker processes.

    Dask sets `OMP_NUM_THREADS=1` in workers, which halves XGBoost's native speed (training,
    prediction, SHAP) on a 2-core machine: hand the worker's threads to OpenMP instead.
    """
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


@contextmanager
def dask_cluster(cfg: ClusterConfig) -> Iterator[ClusterHandle]:
    """Start (or connect to) the cluster; close what was started on exit."""
    dashboard = "127.0.0.1:0" if cfg.dashboard else None
    # A local cluster's start/stop chatter at INFO would bury the training log.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if cfg.kind == "address":
        with Client(cfg.address, timeout="30s") as client:
            has_gpu = any(w.get("resources", {}).get("GPU") for w in client.scheduler_info()["workers"].values())
            yield ClusterHandle(client, "cuda" if has_gpu else "cpu", "address", client.dashboard_link)
        return

    n_gpus = gpu_count() if cfg.kind in ("auto", "cuda") else 0
    if cfg.kind == "cuda" and n_gpus == 0:
        raise ConfigError(
            "cluster.kind is 'cuda' but no GPU is usable (install the gpu extra and check "
            "nvidia-smi), or use cluster.kind 'auto'"
        )
    cores = os.cpu_count() or 1
    if n_gpus:
        from dask_cuda import LocalCUDACluster

        n_workers = cfg.n_workers or n_gpus
        threads = cfg.threads_per_worker or max(1, cores // n_workers)
        cluster: LocalCluster = LocalCUDACluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            host="127.0.0.1",
            dashboard_address=dashboard,
            env=worker_env(threads),
        )
        device: Device = "cuda"
    else:
        n_workers = cfg.n_workers or 1
        threads = cfg.threads_per_worker or max(1, cores // n_workers)
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard,
            env=worker_env(threads),
        )
        device = "cpu"
    with cluster, Client(cluster) as client:
        link = client.dashboard_link if cfg.dashboard else None
        yield ClusterHandle(client, device, "cuda" if n_gpus else "local", link)
