"""`glassbox up|down|status`: start the platform's processes (`tasks.platform.plan`), each
health-checked before the next, deploy `prefect.yaml`, and stop them; every part in a session
of its own, logging to `<home>/logs/<part>.log`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from tasks import runner
from tasks.platform import (
    BIN,
    PARTS,
    POOL,
    STATE_FILE,
    Part,
    PlatformError,
    Settings,
    State,
    base_env,
    dask_config,
    engine_command,
    plan,
    read_state,
    runner_socket,
    running,
    still_ours,
    with_engine_command,
    worker_layout,
    write_state,
)


def _port_free(port: int) -> bool:
    """Nothing listens on the port (a socket in TIME_WAIT does not count: servers reuse it)."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(check: Callable[[], bool], part: str, log: Path, proc: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise PlatformError(
                f"{part} exited with code {proc.returncode}; last lines of {log}:\n" + _tail(log)
            )
        time.sleep(0.3)
    raise PlatformError(f"{part} did not answer within {timeout:.0f} s; see {log}:\n" + _tail(log))


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _workers_ready(settings: Settings, count: int) -> Callable[[], bool]:
    url = f"http://127.0.0.1:{settings.ports.dashboard}/json/counts.json"

    def check() -> bool:
        import httpx

        try:
            return int(httpx.get(url, timeout=2).json().get("workers", 0)) >= count
        except (httpx.HTTPError, ValueError):
            return False

    return check


def _pool_worker_online(settings: Settings) -> Callable[[], bool]:
    def check() -> bool:
        import httpx

        try:
            resp = httpx.post(
                f"{settings.prefect_api}/work_pools/{POOL}/workers/filter", json={}, timeout=2
            )
            return resp.status_code == 200 and any(w.get("status") == "ONLINE" for w in resp.json())
        except (httpx.HTTPError, ValueError):
            return False

    return check


def _checks(settings: Settings) -> dict[str, Callable[[], bool]]:
    return {
        "mlflow": lambda: _http_ok(f"{settings.mlflow_url}/health"),
        "prefect-server": lambda: _http_ok(f"{settings.prefect_api}/health"),
        "dask-scheduler": lambda: _http_ok(f"http://127.0.0.1:{settings.ports.dashboard}/health"),
        "dask-worker": _workers_ready(settings, settings.gpus or worker_layout(settings)[0]),
        "prefect-worker": _pool_worker_online(settings),
        "runner": lambda: runner.ping(runner_socket(settings.home)),
    }


def _ports(settings: Settings) -> dict[str, int]:
    p = settings.ports
    return {"mlflow": p.mlflow, "prefect-server": p.prefect, "dask-scheduler": p.scheduler}


def _start(part: Part, settings: Settings) -> subprocess.Popen[bytes]:
    log = settings.home / "logs" / f"{part.name}.log"
    with log.open("ab") as out:
        # A session of its own: `down` signals the whole group (uvicorn, nanny and worker
        # children), and a Ctrl-C in the terminal that ran `up` does not reach it.
        return subprocess.Popen(
            part.argv,
            env=part.env,
            cwd=settings.root,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def up(settings: Settings, say: Callable[[str], None] = print, deploy: bool = True) -> State:
    """Start what is not running, health-check each part before the next, deploy
    `prefect.yaml`; a second call starts nothing that already answers."""

    import yaml

    from tasks import tracking
    from tasks.config import TrackingConfig

    (settings.home / "logs").mkdir(parents=True, exist_ok=True)
    (settings.home / "prefect").mkdir(exist_ok=True)
    (settings.home / "dask").mkdir(exist_ok=True)
    (settings.home / "dask" / "glassbox.yaml").write_text(
        yaml.safe_dump(dask_config(*worker_layout(settings)))
    )
    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    # Create and migrate the store once, here, before a server or a run can race for it.
    tracking.configure(TrackingConfig(uri=settings.store))
    old = running(settings.home)
    if old is not None and old.store != settings.store:
        raise PlatformError(
            f"the platform in {settings.home} serves {old.store}; `glassbox down` first"
        )
    state = State.of(settings, dict(old.processes) if old else {})
    checks = _checks(settings)
    ports = _ports(settings)
    for part in plan(settings):
        log = settings.home / "logs" / f"{part.name}.log"
        if part.name in state.processes:
            _wait(checks[part.name], part.name, log, None, 30)
            say(f"  {part.name:<15} already running (pid {state.processes[part.name]['pid']})")
            continue
        port = ports.get(part.name)
        if port is not None and not _port_free(port):
            raise PlatformError(
                f"{part.name}: port {port} on 127.0.0.1 is taken by another program "
                f"(choose another with --{part.name.split('-')[0]}-port)"
            )
        if part.name == "prefect-worker":
            _pool_uses_runner(settings)
        t0 = time.monotonic()
        proc = _start(part, settings)
        # The program itself may run under an interpreter (a script's shebang): its arguments
        # identify it.
        state.processes[part.name] = {"pid": proc.pid, "args": part.argv[1:], "log": str(log)}
        write_state(settings.home, state)  # `down` can stop it even if a later part fails
        _wait(checks[part.name], part.name, log, proc, 180)
        where = f"  {part.url}" if part.url else ""
        say(f"  {part.name:<15} started in {time.monotonic() - t0:4.1f} s{where}")
    if deploy:
        t0 = time.monotonic()
        out = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
            env=base_env(settings),
            cwd=settings.root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        (settings.home / "logs" / "deploy.log").write_text(out.stdout + out.stderr)
        if out.returncode != 0:
            raise PlatformError(
                f"prefect deploy failed; see {settings.home / 'logs' / 'deploy.log'}:\n"
                + (out.stdout + out.stderr)[-1500:]
            )
        say(f"  {'deployments':<15} prefect.yaml deployed in {time.monotonic() - t0:4.1f} s")
    return state


def _pool_uses_runner(settings: Settings) -> None:
    """Create the `glassbox` work pool, or update it, so that its flow runs start in the warm
    runner: a deployment run then skips Prefect's workspace supervisor and the imports (~5 s)."""
    import httpx

    url = f"{settings.prefect_api}/work_pools/{POOL}"
    command = engine_command(settings.home)
    pool = httpx.get(url, timeout=10)
    if pool.status_code == 404:
        from prefect.workers.process import ProcessWorker

        template = with_engine_command(ProcessWorker.get_default_base_job_template(), command)
        made = httpx.post(
            f"{settings.prefect_api}/work_pools/",
            json={"name": POOL, "type": "process", "base_job_template": template},
            timeout=10,
        )
    else:
        pool.raise_for_status()
        if pool.json().get("type") != "process":
            return  # a pool of the user's own kind: its runs start as it says
        template = with_engine_command(pool.json()["base_job_template"], command)
        made = httpx.patch(url, json={"base_job_template": template}, timeout=10)
    if made.is_error:
        raise PlatformError(f"could not set up the {POOL} work pool: {made.text[:300]}")


def _group_members(pid: int) -> list[Any]:
    import psutil

    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return []


def stop(records: list[dict[str, Any]], timeout: float = 20) -> None:
    """SIGTERM the parts' process groups (and stray children) at once, SIGKILL what is left
    after `timeout`."""
    import psutil

    alive = [r for r in records if still_ours(r)]
    members = [m for r in alive for m in _group_members(int(r["pid"]))]
    for record in alive:
        with suppress(OSError):
            os.killpg(int(record["pid"]), signal.SIGTERM)
    for proc in members:
        with suppress(psutil.Error):
            proc.terminate()
    _, left = psutil.wait_procs(members, timeout=timeout)
    for proc in left:
        with suppress(psutil.Error):
            proc.kill()
    for record in alive:
        with suppress(OSError):
            os.killpg(int(record["pid"]), signal.SIGKILL)
    psutil.wait_procs(left, timeout=5)


def down(home: Path, say: Callable[[str], None] = print) -> list[str]:
    """Stop what `up` started and forget it; returns the parts stopped."""
    state = read_state(home)
    if state is None:
        say(f"nothing to stop: no platform recorded in {home}")
        return []
    t0 = time.monotonic()
    records = {n: r for n, r in state.processes.items() if still_ours(r)}
    stop(list(records.values()))
    for name in PARTS:
        if name in state.processes:
            done = f"stopped (pid {records[name]['pid']})" if name in records else "was not running"
            say(f"  {name:<15} {done}")
    say(f"stopped in {time.monotonic() - t0:.1f} s")
    (home / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(home / "dask-worker-space", ignore_errors=True)
    return list(records)


def status_lines(home: Path) -> Iterator[str]:
    state = read_state(home)
    if state is None:
        yield f"glassbox platform: down (nothing recorded in {home})"
        return
    urls = {
        "mlflow": state.mlflow_url,
        "prefect-server": state.prefect_ui,
        "dask-scheduler": f"{state.scheduler}  dashboard {state.dashboard}",
    }
    for name in PARTS:
        record = state.processes.get(name)
        if record is None:
            yield f"  {name:<15} not started"
            continue
        alive = "up  " if still_ours(record) else "DOWN"
        yield f"  {name:<15} {alive} pid {record['pid']:<8} {urls.get(name, '')}".rstrip()
    yield f"  store           {state.store}"
    yield f"  logs            {home / 'logs'}"
