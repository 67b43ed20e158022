"""A flow run ends when its work is done and its events are sent, with its heartbeats still
sent (`tasks.flow_exit`)."""

from __future__ import annotations

import time

from prefect import flow
from prefect.flow_engine import FlowRunEngine

import flows.train  # noqa: F401  (the flows install it when they are imported)


def test_a_flow_run_ends_without_waiting_for_its_heartbeat_threads_next_second(
    prefect_harness, monkeypatch
):
    sent = []
    emit = FlowRunEngine._emit_flow_run_heartbeat

    def counted(self, *args, **kwargs):
        sent.append(time.perf_counter())
        return emit(self, *args, **kwargs)

    monkeypatch.setattr(FlowRunEngine, "_emit_flow_run_heartbeat", counted)

    @flow
    def quick() -> float:
        time.sleep(0.2)  # the heartbeat thread sends its first heartbeat meanwhile
        return time.perf_counter()

    from prefect.events.worker import EventsWorker

    quick()  # the first run also opens the events worker's connection
    ends, queued = [], []
    for _ in range(3):
        body_done = quick()
        ends.append(time.perf_counter() - body_done)
        # ... once its events are sent (else Prefect sends them at exit, with a warning)
        queued.append(EventsWorker.instance()._queue.unfinished_tasks)
    assert queued == [0, 0, 0]
    # Heartbeats are still sent: one as each run starts (Prefect's default: every 180 s).
    assert len(sent) == 4
    # Prefect 3.8's heartbeat thread sleeps in whole seconds and was joined as the run ended:
    # the flow call returned up to a second after its body (0.8 s for this one). Now the final
    # state is reported and the run's events are sent.
    assert max(ends) < 0.5, ends
