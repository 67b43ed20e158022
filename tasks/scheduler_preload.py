"""`dask scheduler --preload tasks.scheduler_preload`: the scheduler imports, as it starts, the
modules of the functions a run sends it (`tasks.platform.RUN_MODULES`; it unpickles every
task), as `glassbox up`'s scheduler does. Without it the first run waits while the scheduler
imports them: 1.5 s, 1,700 modules, on 2 cores."""

from __future__ import annotations

import importlib

from tasks.platform import RUN_MODULES

for _name in RUN_MODULES:
    importlib.import_module(_name)
