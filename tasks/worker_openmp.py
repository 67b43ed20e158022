"""OpenMP in the Dask workers: only the threads that run tasks open parallel regions.

libgomp (the OpenMP runtime XGBoost and scikit-learn share in a process) keeps a pool of threads
for every thread that has opened a parallel region, and counts them all. Once a process holds
more of them than it has cores, a thread waiting at one of OpenMP's barriers spins 100 times
before it sleeps, instead of 300,000: XGBoost's hist training, many short parallel loops a
tree, then pays a futex wake-up for nearly every loop.

A Dask worker unpickles what it is sent in its event loop thread (messages over 10 MiB in Dask's
offload thread). A booster configures itself as it is unpickled, in a parallel loop of its own
threads: `xgboost.dask` scatters the model it predicts with, so every prediction on the cluster
gave the worker's event loop a pool of its own. The standing worker that trains (`glassbox up`,
`tasks.cluster.one_trainer`) then held one OpenMP thread more than the machine's cores for good,
and trained 13-19% slower per round than the same call in a fresh worker or a plain process.

`dask_setup` (a worker preload) caps OpenMP at one thread in those two threads: what they run is
serial, and the threads that run tasks keep theirs (OpenMP's thread count is per thread).
"""

from __future__ import annotations

from typing import Any

import xgboost  # noqa: F401  # loads the OpenMP runtime the caps are set in


def serial_here() -> None:
    """Cap OpenMP at one thread in the calling thread (every OpenMP runtime loaded)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="openmp")


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, run in the worker's event loop thread as it starts."""
    serial_here()
    from distributed import utils

    # Dask's offload thread (one, started on first use, kept for the process's life).
    offload = getattr(utils, "_offload_executor", None)
    if offload is not None:
        offload.submit(serial_here).result()
