"""The processes a run owns, and what is left when one dies: a temporary Prefect server that is
out of reach of a terminal's Ctrl-C and dies with the command that started it (even after
`kill -9`), a process identity that survives pid reuse, and workspaces whose owner is gone.

Prefect's own temporary server shares the command's process group: Ctrl-C kills it first, and the
interrupted run then retries its last reports against a dead server for minutes. `kill -9` of the
command leaves it running. Linux only for the parent-death signal; elsewhere the server is still
stopped at a normal exit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

OWNER_FILE = ".owner.json"
TEMPORARY_ENV = "GLASSBOX_TEMPORARY_PREFECT"  # set while a command's own server is its API


def identity(pid: int | None = None) -> dict[str, Any]:
    """Who a process is: host, pid and a digest of its command line (start times are no proof:
    a VM's clock can step, and psutil derives them from it)."""
    import psutil

    proc = psutil.Process(pid or os.getpid())
    return {"host": socket.gethostname(), "pid": proc.pid, "cmd": _digest(proc.cmdline())}


def _digest(cmdline: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\0".join(cmdline).encode()).hexdigest()[:16]


def alive(who: dict[str, Any]) -> bool | None:
    """Whether the process is still running: None when it is on another host (unknowable)."""
    import psutil

    if who.get("host") != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(who["pid"]))
        return proc.status() != psutil.STATUS_ZOMBIE and _digest(proc.cmdline()) == who["cmd"]
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


def claim(workspace: Path) -> None:
    """Mark a run's workspace as this process's."""
    (workspace / OWNER_FILE).write_text(json.dumps(identity()))


def sweep_workspaces(root: Path) -> list[Path]:
    """Remove the workspaces under `root` whose owner process died on this host (a run killed
    with `kill -9` or lost with its machine); returns what was removed."""
    removed = []
    for folder in root.glob("*/"):
        try:
            who = json.loads((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if alive(who) is False:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM this process when the one that started it dies, however it dies."""
    import ctypes

    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_prefect_server(timeout: float = 90.0) -> str:
    """A Prefect API server for one command, started as Prefect starts its temporary one, but in
    a session of its own (Ctrl-C in the terminal reaches the run, not the server the run reports
    to) and tied to this process's life. Stopped at exit, after Prefect's own exit handlers have
    sent their last logs (they were registered later, and run first). Returns its API URL.

    Raises:
        RuntimeError: the server did not answer within `timeout` seconds.
    """
    import atexit

    import httpx

    spec = importlib.util.find_spec("prefect")  # not imported: settings are read at import
    assert spec is not None and spec.submodule_search_locations
    app_dir = str(Path(next(iter(spec.submodule_search_locations))).parent)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    deadline = time.monotonic() + timeout
    while True:
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                app_dir,
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        atexit.register(_stop, proc)
        while proc.poll() is None:
            if time.monotonic() > deadline:
                _stop(proc)
                raise RuntimeError(
                    f"the temporary Prefect server on {url} did not answer in {timeout:.0f} s"
                )
            with suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return url
            time.sleep(0.1)
        if time.monotonic() > deadline:  # it exited (3: the port was taken): another port
            raise RuntimeError(f"the temporary Prefect server exited with code {proc.returncode}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
