"""A warm runner for `glassbox` commands while `glassbox up` runs: one process that has imported
Prefect, MLflow, XGBoost, Dask and the flows once, and forks a child per command.

A command (`glassbox train`, `sweep`, `retrain`, `promote`, `rollback`) connects to the runner's
Unix socket (in the platform's home, readable by its user only) and hands over its argv, working
folder, environment and its stdin, stdout and stderr (file descriptors, `SCM_RIGHTS`). The forked
child runs `flows.cli.main` with them, so its output goes straight to the user's terminal, and
starts in milliseconds instead of the seconds the imports take. The command then waits, forwards
Ctrl-C (SIGINT), SIGTERM and SIGHUP to the child, and exits with the child's exit status.

Deployment runs come the same way: the platform's work pool starts a flow run with
`python -m tasks.runner engine SOCKET` (`ENGINE`), a process that imports only the standard library
and hands the flow run (its environment: `PREFECT__FLOW_RUN_ID`, the worker's control channel) to
the runner, whose child runs what `python -m prefect.engine` would run. Without a runner, or with
edited code, it becomes `python -m prefect.engine` itself.

If the command dies (`kill -9`), the runner sees its connection close and ends the child with
SIGTERM (the run ends FAILED with the reason, as a command's own SIGTERM would), SIGKILL after
`GRACE` seconds. The runner is single-threaded (a selector loop), so forking it is safe: no
other thread can hold a lock the child would inherit.

Pure protocol helpers on top; `serve` (the runner) and `delegate` (the command's side) below.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

SOCKET_FILE = "runner.sock"
IN_RUNNER_ENV = "GLASSBOX_IN_RUNNER"  # set in a forked child: it must not delegate again
OFF_ENV = "GLASSBOX_NO_RUNNER"  # a user's opt-out: run the command in its own process
GRACE = 20.0  # seconds between SIGTERM and SIGKILL for a child whose command died
# Imported once, before any fork: everything a command's run imports.
WARM = (
    "flows.cli",
    "flows.commands",
    "flows.train",
    "flows.retrain",
    "flows.sweep",
    "tasks.explain",
    "tasks.evaluate",
    "tasks.figures",
    "tasks.lime_dask",
    "tasks.sweep_figures",
    "distributed",
    "xgboost.dask",
    "mlflow.pyfunc",
    "mlflow.xgboost",
    "optuna",
    "seaborn",
    "shap",
)
# Commands that run a flow (the others are quick or serve pages of their own).
DELEGATED = ("train", "retrain", "sweep", "promote", "rollback")
ENGINE = "engine"  # `python -m tasks.runner engine SOCKET`: a deployment's flow run
COLD_ENGINE = ("-m", "prefect.engine")  # what a process worker runs without the runner


def encode(request: dict[str, Any]) -> bytes:
    data = json.dumps(request).encode()
    return len(data).to_bytes(8, "big") + data


def _recv_exact(conn: socket.socket, n: int, fds: list[int]) -> bytes:
    chunks, got = [], 0
    while got < n:
        data, received, _, _ = socket.recv_fds(conn, n - got, 3)
        fds.extend(received)
        if not data:
            raise ConnectionError("the command hung up")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """A request and the file descriptors sent with it."""
    fds: list[int] = []
    size = int.from_bytes(_recv_exact(conn, 8, fds), "big")
    return json.loads(_recv_exact(conn, size, fds)), fds


# --------------------------------------------------------------------------------------------
# The runner


def _child(request: dict[str, Any], fds: list[int], close: list[int]) -> None:
    """In the forked child: become the command, run it, exit with its status."""
    import atexit
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)  # a group of its own: the runner signals it and what it starts
        for fd in close:
            os.close(fd)
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[IN_RUNNER_ENV] = "1"
        if request.get(ENGINE):
            code = _run_engine()
        else:
            sys.argv = ["glassbox", *request["argv"]]
            from flows.cli import main

            code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()  # Prefect's log and event workers flush here
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run_engine() -> int:
    """`python -m prefect.engine`, here: the flow run named by `PREFECT__FLOW_RUN_ID` in the
    environment the worker gave (Prefect's settings read again from it)."""
    import runpy
    import warnings

    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    sys.argv = [sys.executable]  # no argument: the flow run id comes from the environment
    with warnings.catch_warnings():
        # prefect.engine was imported before: runpy says so, and runs it as __main__ anyway.
        warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    return 0


def sources() -> list[Path]:
    """The project's Python files the runner has imported (flows, tasks and its packages)."""
    import flows
    import tasks

    roots = [Path(flows.__file__).parent, Path(tasks.__file__).parent]
    return [f for root in roots for f in root.rglob("*.py")]


def _stale(files: list[Path], since: float) -> bool:
    """A source file changed (or appeared) after the runner imported them."""
    try:
        return any(f.stat().st_mtime > since for f in files) or len(sources()) != len(files)
    except OSError:
        return True


def _map_packages() -> None:
    """MLflow maps the installed packages' modules once per process, to check a logged model's
    requirements (a stat of every installed file: 1 to 1.5 s of each run's `log-model`): here,
    once, so that every child inherits the map."""
    from mlflow.utils.requirements_utils import _init_modules_to_packages_map

    _init_modules_to_packages_map()


def _open_store(uri: str) -> None:
    """Open the platform's sqlite store once (MLflow checks its schema: half a second a run),
    so that the children find it in MLflow's store cache; its connections are closed before
    any fork, each child opens its own."""
    if not uri.startswith("sqlite:///"):
        return
    from mlflow.tracking._tracking_service.utils import _get_store

    _get_store(uri).engine.dispose()


def serve(path: Path, log: Any = None) -> None:
    """Import everything once, then accept commands until SIGTERM (the platform's `down`),
    which ends the children first."""
    say = log or (lambda text: print(text, flush=True))
    t0, imported_at = time.monotonic(), time.time()
    import matplotlib

    matplotlib.use("Agg")
    for name in WARM:
        importlib.import_module(name)
    _open_store(os.environ.get("MLFLOW_TRACKING_URI", ""))
    _map_packages()
    # Before any fork: the children inherit the imports frozen out of the collector's walks.
    from tasks.gc_tuning import tune

    tune()
    files = sources()
    say(f"runner: imported {len(WARM)} modules in {time.monotonic() - t0:.1f} s")
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is its user's alone
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(16)
    listener.setblocking(False)
    stopping = restart = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    orphans: dict[int, float] = {}  # child pid -> when it got SIGTERM (its command died)
    say(f"runner: listening on {path}")
    while not stopping:
        for key, _ in selector.select(timeout=0.2):
            if key.fileobj is listener:
                # Edited code: the command runs in its own process, and the runner imports the
                # new code as soon as no command of its own is running.
                if _accept(listener, selector, children, say, lambda: _stale(files, imported_at)):
                    stopping = restart = not children
            else:
                conn = key.fileobj
                pid = next((p for p, c in children.items() if c is conn), None)
                try:
                    gone = conn.recv(1) == b""  # type: ignore[union-attr]
                except OSError:
                    gone = True
                if gone:
                    selector.unregister(conn)
                    if pid is not None and pid not in orphans:
                        say(f"runner: the command of {pid} is gone; SIGTERM to it")
                        _signal_group(pid, signal.SIGTERM)
                        orphans[pid] = time.monotonic()
        _reap(children, orphans, selector, say)
        for pid, since in list(orphans.items()):
            if time.monotonic() - since > GRACE:
                _signal_group(pid, signal.SIGKILL)
    for pid in list(children):
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while children and time.monotonic() < deadline:
        _reap(children, orphans, selector, say)
        time.sleep(0.1)
    for pid in list(children):
        _signal_group(pid, signal.SIGKILL)
    listener.close()
    path.unlink(missing_ok=True)
    if restart:
        say("runner: the code changed; importing it again")
        os.execv(sys.executable, [sys.executable, "-m", "tasks.runner", str(path)])
    say("runner: stopped")


def _accept(
    listener: socket.socket,
    selector: selectors.BaseSelector,
    children: dict[int, socket.socket],
    say: Any,
    stale: Any,
) -> bool:
    """Answer a ping, refuse a command when the code is stale, else fork the command's child.
    Returns whether it refused for stale code."""
    conn, _ = listener.accept()
    conn.setblocking(True)
    conn.settimeout(10)
    try:
        request, fds = receive(conn)
    except (OSError, ValueError, ConnectionError) as exc:
        say(f"runner: a bad request: {exc}")
        conn.close()
        return False
    answer = "pong" if len(fds) != 3 or request.get("ping") else "stale" if stale() else None
    if answer:
        for fd in fds:
            os.close(fd)
        with suppress(OSError):
            conn.sendall(f"{answer}\n".encode())
        conn.close()
        if answer == "stale":
            command = " ".join(request["argv"])
            what = "a flow run" if request.get(ENGINE) else f"glassbox {command}"
            say(f"runner: source files changed; {what} runs cold")
        return answer == "stale"
    sys.stdout.flush()
    sys.stderr.flush()
    close = [listener.fileno(), conn.fileno(), *(c.fileno() for c in children.values())]
    pid = os.fork()
    if pid == 0:
        _child(request, fds, close)
    for fd in fds:
        os.close(fd)
    conn.settimeout(None)
    conn.sendall(f"pid {pid}\n".encode())
    children[pid] = conn
    selector.register(conn, selectors.EVENT_READ)
    if request.get(ENGINE):
        say(f"runner: {pid}: flow run {request['env'].get('PREFECT__FLOW_RUN_ID')}")
    else:
        say(f"runner: {pid}: glassbox {' '.join(request['argv'])} (in {request['cwd']})")
    return False


def _reap(
    children: dict[int, socket.socket],
    orphans: dict[int, float],
    selector: selectors.BaseSelector,
    say: Any,
) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        conn = children.pop(pid, None)
        orphans.pop(pid, None)
        say(f"runner: {pid} exited with {code}")
        if conn is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(conn)
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {code}\n".encode())
            conn.close()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


# --------------------------------------------------------------------------------------------
# The command's side


def delegate(path: Path, argv: list[str], engine: bool = False) -> int | None:
    """Run the command (`engine`: the flow run in this environment) in the runner at `path`:
    its exit status, or None when no runner answers (the command then runs in its own
    process)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), ENGINE: engine}
        payload = encode(request)
        socket.send_fds(conn, [payload[:1]], [0, 1, 2])
        conn.sendall(payload[1:])
        reader = conn.makefile("rb")
        first = reader.readline().decode().split()
    except OSError:
        conn.close()
        return None
    if len(first) != 2 or first[0] != "pid":
        conn.close()
        return None
    pid = int(first[1])

    def forward(sig: int, _: Any) -> None:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            line = reader.readline().decode().split()
            break
        except InterruptedError:
            continue
    conn.close()
    if len(line) == 2 and line[0] == "exit":
        return int(line[1])
    print("glassbox: the platform's runner went away during the command", file=sys.stderr)
    return 1


def ping(path: Path, timeout: float = 2.0) -> bool:
    """The runner answers (its health check)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(path))
            conn.sendall(encode({"ping": True}))
            return conn.recv(5) == b"pong\n"
    except OSError:
        return False


def engine(path: Path) -> None:
    """A process worker's flow run: in the runner at `path` when it answers, else (no runner,
    edited code) as `python -m prefect.engine` in this process."""
    code = delegate(path, [], engine=True)
    if code is None:
        os.execv(sys.executable, [sys.executable, *COLD_ENGINE])
    sys.exit(code)


def main() -> None:
    """`python -m tasks.runner SOCKET`: the platform starts the runner;
    `python -m tasks.runner engine SOCKET`: its work pool starts a flow run."""
    if sys.argv[1] == ENGINE:
        engine(Path(sys.argv[2]))
    else:
        serve(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
