"""The platform's Prefect worker (`tasks.prefect_worker`): a cancelled run's exit is seen at
once; a run that ignores the signal is still killed by Prefect's own sequence. Real child
processes and signals, Prefect's own process manager."""

from __future__ import annotations

import signal
import time
import uuid

import anyio
import pytest

from tasks import prefect_worker


@pytest.fixture(scope="module", autouse=True)
def installed():
    assert prefect_worker.install()
    assert prefect_worker.install()  # twice is harmless: wrapped once


async def _kill(argv: list[str], grace: float) -> tuple[float, int | None]:
    from prefect.runner._process_manager import ProcessHandle, ProcessManager

    async with ProcessManager() as manager, await anyio.open_process(argv) as process:
        run = uuid.uuid4()
        await manager.add(run, ProcessHandle(process))
        await anyio.sleep(0.3)  # the child is set up (its trap, if any)
        start = time.monotonic()
        await manager.kill(run, grace_seconds=grace)
        elapsed = time.monotonic() - start
        code = await process.wait()
        await manager.remove(run)
    return elapsed, code


def test_a_cancelled_run_that_exits_on_sigterm_is_seen_gone_before_prefect_would_look():
    """Prefect 3.8 looks again max(grace / 10, 1) s after its SIGTERM: 3 s of a cancel's 30 s
    grace, while the warm runner's child is gone within 0.2 s."""
    elapsed, code = anyio.run(_kill, ["sleep", "60"], 30.0)
    assert code == -signal.SIGTERM
    assert elapsed < 1.0  # looks every 0.1 s; Prefect's own first look: 3 s


def test_a_run_that_ignores_sigterm_is_still_killed_after_its_grace():
    elapsed, code = anyio.run(_kill, ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], 2.0)
    assert code == -signal.SIGKILL
    assert elapsed >= 2.0
