"""The warm runner (`tasks/runner.py`) as its own process on a socket in a temp folder: a
command's output, exit status and file descriptors go through it; edited code is never served
stale. The platform tests (`tests/test_platform.py`) drive it through `glassbox up` with signals.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks import runner
from tests.conftest import ROOT

pytestmark = pytest.mark.deployment


@pytest.fixture
def warm(tmp_path):
    sock = tmp_path / "runner.sock"
    log = (tmp_path / "runner.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.runner", str(sock)], cwd=ROOT, stdout=log, stderr=log
    )
    deadline = time.time() + 60
    while not runner.ping(sock) and time.time() < deadline:
        time.sleep(0.2)
    assert runner.ping(sock), (tmp_path / "runner.log").read_text()
    yield sock, proc, tmp_path / "runner.log"
    proc.terminate()
    proc.wait(30)


def _delegate(sock: Path, argv: list[str], tmp_path: Path) -> tuple[int | None, str, str]:
    """`runner.delegate` in a child process whose stdout and stderr are files."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    code = (
        "import sys; from pathlib import Path; from tasks import runner; "
        f"sys.exit({{None: 99}}.get(c := runner.delegate(Path({str(sock)!r}), {argv!r}), c))"
    )
    with out.open("w") as o, err.open("w") as e:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=o, stderr=e)
    return (None if done.returncode == 99 else done.returncode), out.read_text(), err.read_text()


def test_a_command_runs_in_a_forked_child_with_the_callers_output_and_status(warm, tmp_path):
    sock, proc, log = warm
    code, out, err = _delegate(sock, ["train", "--set", "train.num_boost_roun=5"], tmp_path)
    assert code == 2 and out == ""  # the error on the caller's stderr, nothing on its stdout
    assert err.strip() == (
        "glassbox: invalid config: train.num_boost_roun: unknown key "
        "(did you mean 'num_boost_round'?)"
    )
    assert "exited with 2" in log.read_text()
    assert proc.poll() is None  # the runner serves the next one


def test_edited_code_is_not_served_stale_and_the_runner_reloads(warm, tmp_path):
    sock, proc, log = warm
    source = ROOT / "tasks" / "storage.py"
    before = source.stat()
    try:
        os.utime(source, (before.st_atime, time.time() + 5))
        code, _, _ = _delegate(sock, ["train", "--set", "x=1"], tmp_path)
        assert code is None  # refused: the caller runs it in its own process
    finally:
        os.utime(source, (before.st_atime, before.st_mtime))
    deadline = time.time() + 60
    while "listening" not in log.read_text().split("importing it again")[-1]:
        assert time.time() < deadline, log.read_text()
        time.sleep(0.2)
    assert proc.poll() is None  # the same process, the code imported again
    code, _, err = _delegate(sock, ["train", "--set", "x=1"], tmp_path)
    assert code == 2 and "x: unknown key" in err


def test_the_store_is_opened_once_and_no_connection_crosses_a_fork(tmp_path):
    """In a single-threaded process, as the runner is: the store is opened before the fork with
    no connection left open, and the forked child finds it in MLflow's cache; MLflow's map of
    the installed packages (its requirement check when a model is logged) is made once too."""
    code = f"""
import os, threading
from mlflow.tracking._tracking_service.utils import _get_store
from tasks import runner, tracking
from tasks.config import TrackingConfig
uri = "sqlite:///{tmp_path}/mlflow.db"
tracking.configure(TrackingConfig(uri=uri))  # what `glassbox up` does
runner._open_store(uri)
runner._map_packages()
store = _get_store(uri)
assert store.engine.pool.checkedin() == 0 and store.engine.pool.checkedout() == 0
pid = os.fork()
if pid == 0:
    from mlflow.utils import requirements_utils
    ok = _get_store(uri) is store and store.search_experiments()[0].name == "Default"
    ok = ok and "xgboost" in requirements_utils._MODULES_TO_PACKAGES["xgboost"]
    os._exit(0 if ok else 1)
assert os.waitpid(pid, 0)[1] == 0, "the child could not use the store"
runner._open_store("http://127.0.0.1:5000")  # a server: nothing to open
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip().endswith("ok"), out.stderr[-2000:]
