"""Python's cyclic garbage collector, set for the processes that draw figures: the Dask workers
(a preload, `dask_setup`), the warm runner (before it forks) and the command line.

A matplotlib figure is thousands of objects tied in reference cycles, which only the cyclic
collector frees. With Python's default thresholds (700, 10, 10) many of a figure's objects
outlive the young collections that run while it is drawn, reach the oldest generation and wait
there for a full collection, which walks every object the process holds: in a worker that has
imported shap, XGBoost, scikit-learn and matplotlib about 300,000 of them, 0.3-0.45 s a walk.
In one measured default run that was 2-3 walks a worker, 11-22% of its time.

`tune` freezes what the process holds when it is called (the imported modules) out of every
later walk, and raises the young generation's threshold: fewer collections, each finding more of
the figures dropped meanwhile. A figure-drawing bench spent 0.2-0.3 s in the collector instead of
0.8-0.9 s; drawing 16 figures in a worker takes no full collection (with the defaults, one or
more). It changes when garbage is freed, not what is freed.
"""

from __future__ import annotations

import gc
from typing import Any

# Allocations (net of those freed at once) between young collections: a few figures.
YOUNG = 10_000
# Young collections per middle one, middle ones per full one (Python's defaults: 10, 10).
MIDDLE, OLD = 20, 10


def tune() -> None:
    """Freeze the objects the process holds now and raise the young threshold. Call it once
    the process has imported what it needs; it costs microseconds (no collection)."""
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, run in each worker as it starts, after every preload module (the
    figures' and explanations' among them) has been imported."""
    tune()
