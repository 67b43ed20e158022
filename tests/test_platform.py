"""`glassbox up` for real: every part started as its own process on free ports, a CLI run that
uses the standing Prefect server and Dask cluster and links both ways, runs triggered in the
Prefect UI and compared in the MLflow UI in a real browser, and `glassbox down` leaving nothing.

The tests run in file order against one platform: the last one stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.deployment
GLASSBOX = str(Path(sys.executable).with_name("glassbox"))
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _glassbox(env, *args, timeout=400):
    return subprocess.run(
        [GLASSBOX, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("platform")
    ports = {k: _free_port() for k in ("prefect", "mlflow", "dask", "dashboard")}
    env = {
        **os.environ,
        "GLASSBOX_HOME": str(tmp / "home"),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    store = f"sqlite:///{tmp}/store/mlflow.db"
    args = [f"--{k}-port={v}" for k, v in ports.items()]
    args += ["--threads", "2", "--set", f"tracking.uri={store}"]
    out = _glassbox(env, "up", *args)
    info = {
        "env": env,
        "args": args,
        "ports": ports,
        "store": store,
        "home": tmp / "home",
        "prefect": f"http://127.0.0.1:{ports['prefect']}",
        "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
        "up": out,
    }
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        yield info
    finally:
        _glassbox(env, "down", timeout=120)


def _processes(home: Path) -> list[psutil.Process]:
    state = json.loads((home / "platform.json").read_text())
    found = []
    for record in state["processes"].values():
        parent = psutil.Process(record["pid"])
        found += [parent, *parent.children(recursive=True)]
    return found


def test_up_starts_every_part_healthy_and_twice_is_harmless(up):
    first = up["up"].stdout
    for part in ("mlflow", "prefect-server", "dask-scheduler", "dask-worker", "prefect-worker"):
        assert f"{part}" in first and "started in" in first
    assert "prefect.yaml deployed" in first
    before = sorted(p.pid for p in _processes(up["home"]))
    again = _glassbox(up["env"], "up", *up["args"], "--no-deploy")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already running") == 5
    assert sorted(p.pid for p in _processes(up["home"])) == before
    assert httpx.get(f"{up['mlflow']}/health").status_code == 200
    assert httpx.get(f"{up['prefect']}/api/health").status_code == 200
    status = _glassbox(up["env"], "status").stdout
    assert status.count(" up ") == 5 and up["store"] in status
    # every listening socket of the platform is on loopback
    for proc in _processes(up["home"]):
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                assert conn.laddr.ip == "127.0.0.1", (proc.cmdline(), conn)


def test_a_cli_run_uses_the_platform_and_links_both_ways(up):
    out = _glassbox(
        up["env"],
        "train",
        "wine",
        "--set",
        "train.num_boost_round=12",
        "--set",
        "explain.random_rows=2",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # the link printed is the platform's MLflow UI
    assert f"Look at it: {up['mlflow']}/#/experiments/" in out.stdout
    from mlflow import MlflowClient

    client = MlflowClient(up["store"])
    (run,) = client.search_runs(
        [client.get_experiment_by_name("glassbox-wine").experiment_id],
        "attributes.status = 'FINISHED'",
    )
    params, tags = run.data.params, run.data.tags
    scheduler = f"tcp://127.0.0.1:{up['ports']['dask']}"
    assert (params["cluster.kind"], params["cluster.address"]) == ("address", scheduler)
    assert params["tracking.ui_url"] == up["mlflow"]
    # MLflow -> Prefect: the run page's description links to the flow run
    flow_run_id = tags["prefect.flow_run_id"]
    link = f"{up['prefect']}/runs/flow-run/{flow_run_id}"
    assert tags["prefect.flow_run_url"] == link
    assert f"]({link})" in tags["mlflow.note.content"]
    # one name in both UIs, and the flow run is on the standing server (no temporary one)
    flow_run = httpx.get(f"{up['prefect']}/api/flow_runs/{flow_run_id}").json()
    assert run.info.run_name == flow_run["name"] == tags["prefect.flow_run_name"]
    assert flow_run["state"]["type"] == "COMPLETED"
    # Prefect -> MLflow: one card, pointing at the run page, its files and explanations
    cards = httpx.post(
        f"{up['prefect']}/api/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
    ).json()
    assert [c["key"] for c in cards] == ["mlflow-run"]
    run_url = f"{up['mlflow']}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert f"]({run_url})" in cards[0]["data"]
    assert f"]({run_url}/artifacts/explanations/index.html)" in cards[0]["data"]
    assert "| test_log_loss |" in cards[0]["data"]  # the final version, not the start stub


def test_down_stops_everything_it_started(up):
    procs = _processes(up["home"])
    assert len(procs) >= 6  # five parts, and the Dask nanny's worker process
    out = _glassbox(up["env"], "down", timeout=120)
    assert out.returncode == 0, out.stderr
    _, alive = psutil.wait_procs(procs, timeout=5)
    assert not alive, [p.cmdline() for p in alive]
    for port in up["ports"].values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, port
    assert "down" in _glassbox(up["env"], "status").stdout
    assert not (up["home"] / "dask-worker-space").exists()
    assert shutil.which(GLASSBOX)
