"""A flow run ends when its work is done, not on the heartbeat thread's next whole second.

Prefect 3.8 sends a flow run's heartbeats (`prefect.flow-run.heartbeat` events, which Prefect's
zombie-run automations watch) from a daemon thread that sleeps in steps of one second
(`prefect.flow_engine._send_heartbeats`). Synchronous flows join that thread when they end, so
every flow run ended on a whole second after its start: run times came out as 6.5, 7.5 or 8.5 s
and never between, 0.5 s of waiting a run on average. The async engine passes
`join_on_exit=False` to the same function. `install` makes the sync engine do the same:
heartbeats start and repeat as before, and the thread, told to stop, ends on its own within a
second, never sending another heartbeat (it checks the stop event before each one).

That second had also given Prefect's events worker time to send the run's last events (its task
runs' states, the heartbeat). Without it they were still queued at exit, where Prefect drains them
with a warning ("EventsWorker - Still processing items") printed after the command's last line.
So the run waits for those events instead (`flush_events`, at most `FLUSH_SECONDS`); with the
platform's local server a run still ends well inside the second it used to wait.

The flow modules call `install` when they are imported, so it holds however a flow runs: the
command line, the warm runner, `python -m prefect.engine`, Prefect's test harness. Where the
installed Prefect's function lacks `join_on_exit`, nothing is changed.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

FLUSH_SECONDS = 2.0  # Prefect's own join waited up to 2 s for the heartbeat thread


def flush_events(timeout: float = FLUSH_SECONDS) -> None:
    """Wait until Prefect's events worker has sent what is queued, `timeout` at most (a server
    that does not answer does not hold the run up longer; what is left is sent at exit)."""
    from prefect.events.worker import EventsWorker, should_emit_events_to_running_server

    if not should_emit_events_to_running_server():
        return  # no API: no events worker to wait for (none is started for it)
    waiting = threading.Thread(target=EventsWorker.instance().wait_until_empty, daemon=True)
    waiting.start()
    waiting.join(timeout)


def unjoined(send_heartbeats: Callable[..., Any]) -> Callable[..., Any]:
    """`send_heartbeats` (Prefect's context manager) that never joins its thread on exit, and
    waits for the queued events instead (`flush_events`)."""

    @functools.wraps(send_heartbeats)
    @contextmanager
    def wrapped(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
        try:
            with send_heartbeats(engine, join_on_exit=False):
                yield
        finally:
            flush_events()

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
