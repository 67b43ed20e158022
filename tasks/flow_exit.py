"""A flow run ends when its work is done, not on the heartbeat thread's next whole second.

Prefect 3.8 sends a flow run's heartbeats (`prefect.flow-run.heartbeat` events, which Prefect's
zombie-run automations watch) from a daemon thread that sleeps in steps of one second
(`prefect.flow_engine._send_heartbeats`). Synchronous flows join that thread when they end, so
every flow run ended on a whole second after its start: run times came out as 6.5, 7.5 or 8.5 s
and never between, 0.5 s of waiting a run on average. The async engine passes
`join_on_exit=False` to the same function. `install` makes the sync engine do the same:
heartbeats start and repeat as before, and the thread, told to stop, ends on its own within a
second, never sending another heartbeat (it checks the stop event before each one).

The flow modules call `install` when they are imported, so it holds however a flow runs: the
command line, the warm runner, `python -m prefect.engine`, Prefect's test harness. Where the
installed Prefect's function lacks `join_on_exit`, nothing is changed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any


def unjoined(send_heartbeats: Callable[..., Any]) -> Callable[..., Any]:
    """`send_heartbeats` (Prefect's context manager) that never joins its thread on exit."""

    @functools.wraps(send_heartbeats)
    def wrapped(engine: Any, join_on_exit: bool = True) -> Any:
        return send_heartbeats(engine, join_on_exit=False)

    wrapped.glassbox_unjoined = True  # type: ignore[attr-defined]
    return wrapped


def install() -> bool:
    """Wrap Prefect's heartbeat context manager with `unjoined`, once per process. Returns
    whether it is in place."""
    from prefect import flow_engine

    current = getattr(flow_engine, "_send_heartbeats", None)
    if current is None:
        return False
    if getattr(current, "glassbox_unjoined", False):
        return True
    if "join_on_exit" not in inspect.signature(current).parameters:
        return False
    flow_engine._send_heartbeats = unjoined(current)
    return True
