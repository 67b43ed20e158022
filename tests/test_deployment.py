"""prefect.yaml for real: a Prefect server on 127.0.0.1, `prefect deploy`, a process worker; a
`train` run triggered through the API with a parameter override, found again in MLflow; the
`retrain` deployment's schedule firing (a short interval in the test), surviving a redeploy, and
its run moving the registry's aliases."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.deployment
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        # schedules turn into runs within seconds, not the default minute
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("prefect server did not come up: " + (home / "server.log").read_text()[-2000:])
    yield env
    proc.terminate()
    proc.wait(30)


def _worker(env, folder: Path) -> subprocess.Popen:
    """A process worker on the `glassbox` pool, logging to folder/worker.log."""
    return subprocess.Popen(
        [BIN / "prefect", "worker", "start", "--pool", "glassbox", "--limit", "1"],
        cwd=folder,
        env=env,
        stdout=(folder / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
    )


def _prefect(env, *args):
    out = subprocess.run(
        [BIN / "prefect", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_train_deployment_runs_from_the_api_and_lands_in_mlflow(server, store, tmp_path):
    _prefect(server, "work-pool", "create", "glassbox", "--type", "process")
    _prefect(server, "--no-prompt", "deploy", "--all")
    worker = _worker(server, tmp_path)
    try:
        code = f"""
import asyncio, json
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

async def main():
    async with get_client() as client:
        dep = await client.read_deployment_by_name("train/train")
        schema = dep.parameter_openapi_schema
    run = await run_deployment("train/train", timeout=400, poll_interval=2, parameters={{
        "preset": "wine", "num_boost_round": 7, "max_depth": 2,
        "overrides": {dict(store)!r}}})
    print(json.dumps({{"state": run.state.type.value, "id": str(run.id), "schema": schema}}))
asyncio.run(main())
"""
        out = subprocess.run(
            [sys.executable, "-c", code], env=server, capture_output=True, text=True, timeout=460
        )
        assert out.returncode == 0, out.stderr[-3000:]
        import json

        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        worker.terminate()
        worker.wait(30)
    assert result["state"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
    # the UI form: typed fields, presets as a choice
    props = result["schema"]["properties"]
    assert props["num_boost_round"]["anyOf"][0]["type"] == "integer"
    assert props["learning_rate"]["anyOf"][0]["type"] == "number"
    preset = result["schema"]["definitions"]["Preset"]
    assert preset["enum"] == ["default", "diabetes", "fraud", "wine"]
    # the MLflow run it made, found by the Prefect flow-run id
    from mlflow import MlflowClient

    from tasks import tracking
    from tasks.config import TrackingConfig

    tracking.configure(
        TrackingConfig(uri=store["tracking.uri"], artifact_root=store["tracking.artifact_root"])
    )
    client = MlflowClient()
    exp = client.get_experiment_by_name("glassbox-wine")
    (run,) = client.search_runs(
        [exp.experiment_id], f"tags.`prefect.flow_run_id` = '{result['id']}'"
    )
    assert run.info.status == "FINISHED"
    assert run.data.params["train.num_boost_round"] == "7"
    assert run.data.params["train.params.max_depth"] == "2"
    assert run.data.tags["prefect.deployment"] == "train"
    assert len(client.get_metric_history(run.info.run_id, "curves/valid-mlogloss")) == 7


def _api(env, code: str, timeout: int = 460) -> dict:
    """Run async client code against the test server in a subprocess; its last line is JSON."""
    import json

    script = "import asyncio, json\nfrom prefect.client.orchestration import get_client\n" + code
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sweep_deployment_takes_the_forms_values_and_a_cancel_keeps_finished_trials(
    server, store, tmp_path
):
    import psutil
    from mlflow import MlflowClient

    from tasks import tracking
    from tasks.config import TrackingConfig

    _prefect(server, "work-pool", "create", "glassbox", "--type", "process", "--overwrite")
    _prefect(server, "--no-prompt", "deploy", "--all")
    tracking.configure(
        TrackingConfig(uri=store["tracking.uri"], artifact_root=store["tracking.artifact_root"])
    )
    client = MlflowClient()
    worker = _worker(server, tmp_path)
    try:
        # A sweep with the form's fields: preset, trials, parallel.
        quick = {**store, "train.num_boost_round": 20, "explain.enabled": False}
        done = _api(
            server,
            f"""
from prefect.deployments import run_deployment
async def main():
    async with get_client() as client:
        dep = await client.read_deployment_by_name("sweep/sweep")
    run = await run_deployment("sweep/sweep", timeout=400, poll_interval=2, parameters={{
        "preset": "wine", "trials": 3, "parallel": 2, "overrides": {quick!r}}})
    print(json.dumps({{"state": run.state.type.value, "id": str(run.id),
                      "schema": dep.parameter_openapi_schema}}))
asyncio.run(main())
""",
        )
        assert done["state"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
        props = done["schema"]["properties"]
        assert props["trials"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 10000}
        assert props["timeout"]["anyOf"][0]["type"] == "number"
        (parent,) = client.search_runs(
            [client.get_experiment_by_name("glassbox-wine").experiment_id],
            f"tags.`prefect.flow_run_id` = '{done['id']}' "
            "and tags.`glassbox.sweep.role` = 'parent'",
        )
        assert parent.data.params["sweep.trials"] == "3"
        assert parent.data.params["sweep.parallel_resolved"] == "2"
        assert parent.data.tags["prefect.deployment"] == "sweep"
        children = tracking.child_runs(parent.info.run_id, parent.info.experiment_id)
        assert sorted(r.data.tags["glassbox.sweep.role"] for r in children) == [
            "refit",
            "trial",
            "trial",
            "trial",
        ]

        # A long sweep, cancelled from Prefect once two trials have finished.
        slow = {
            **store,
            "data.rows": 40000,
            "train.num_boost_round": 4000,
            "train.early_stopping_rounds": None,
            "explain.enabled": False,
            "tracking.experiment": "sweep-cancelled",
        }
        started = _api(
            server,
            f"""
from prefect.deployments import run_deployment
async def main():
    run = await run_deployment("sweep/sweep", timeout=0, parameters={{
        "preset": "fraud", "trials": 200, "overrides": {slow!r}}})
    print(json.dumps({{"id": str(run.id)}}))
asyncio.run(main())
""",
        )
        deadline = time.time() + 300
        finished: list = []
        while time.time() < deadline and len(finished) < 2:
            time.sleep(1)
            exp = client.get_experiment_by_name("sweep-cancelled")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            finished = [
                r
                for r in runs
                if r.data.tags.get("glassbox.sweep.role") == "trial" and r.info.status == "FINISHED"
            ]
        assert len(finished) >= 2, (tmp_path / "worker.log").read_text()[-4000:]
        cancelled = _api(
            server,
            f"""
from prefect.states import Cancelling
async def main():
    async with get_client() as client:
        await client.set_flow_run_state("{started["id"]}", Cancelling())
        for _ in range(120):
            run = await client.read_flow_run("{started["id"]}")
            if run.state.is_final():
                break
            await asyncio.sleep(1)
    print(json.dumps({{"state": run.state.type.value}}))
asyncio.run(main())
""",
        )
        assert cancelled["state"] == "CANCELLED"
        # the flow's process and its Dask cluster are gone; the worker stays
        deadline = time.time() + 30
        while psutil.Process(worker.pid).children(recursive=True) and time.time() < deadline:
            time.sleep(0.5)
        assert psutil.Process(worker.pid).children(recursive=True) == []
    finally:
        worker.terminate()
        worker.wait(30)
    exp = client.get_experiment_by_name("sweep-cancelled")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("glassbox.sweep.role") == "parent"]
    assert parent.info.status == "KILLED"
    assert "cancelled" in parent.data.tags["glassbox.failure_reason"]
    trials = [r for r in runs if r.data.tags.get("glassbox.sweep.role") == "trial"]
    assert len(trials) >= 2
    assert all(r.info.status == "FINISHED" for r in trials)  # kept, none left RUNNING
    assert all(r.data.metrics["rounds_trained"] == 4000 for r in trials)  # none cut short
    assert not [r for r in runs if r.data.tags.get("glassbox.sweep.role") == "refit"]
    assert client.search_model_versions("name = 'glassbox-fraud'") == []


def test_retrain_schedule_fires_survives_a_redeploy_and_moves_the_aliases(server, store, tmp_path):
    import yaml

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (retrain,) = [d for d in config["deployments"] if d["name"] == "retrain"]
    assert retrain["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    (schedule,) = retrain["schedules"]
    assert schedule["slug"] and schedule["timezone"] == "UTC" and schedule["active"] is True
    # The project's deployment with its schedule made short and its runs pointed at the test
    # store; everything else as shipped.
    schedule.pop("cron")
    schedule["interval"] = 15
    schedule["parameters"] = {
        "preset": "default",
        "overrides": {**store, "explain.enabled": False, "train.num_boost_round": 20},
    }
    config["deployments"] = [retrain]
    test_yaml = tmp_path / "prefect.yaml"
    test_yaml.write_text(yaml.safe_dump(config))
    _prefect(server, "work-pool", "create", "glassbox", "--type", "process", "--overwrite")
    ids = []
    for _ in range(2):  # deploy, then redeploy: one schedule, the same one
        _prefect(server, "--no-prompt", "deploy", "--all", "--prefect-file", str(test_yaml))
        found = _api(
            server,
            """
async def main():
    async with get_client() as client:
        dep = await client.read_deployment_by_name("retrain/retrain")
        scheds = await client.read_deployment_schedules(dep.id)
        print(json.dumps({"ids": [str(s.id) for s in scheds], "slugs": [s.slug for s in scheds],
                          "active": [s.active for s in scheds],
                          "limit": dep.global_concurrency_limit.limit,
                          "strategy": str(dep.concurrency_options.collision_strategy)}))
asyncio.run(main())
""",
        )
        assert found["slugs"] == [schedule["slug"]] and found["active"] == [True]
        assert found["limit"] == 1 and "CANCEL_NEW" in found["strategy"]
        ids.append(found["ids"][0])
    assert ids[0] == ids[1]
    worker = _worker(server, tmp_path)
    try:
        done = _api(
            server,
            """
from prefect.client.schemas.filters import DeploymentFilter, FlowRunFilter
async def main():
    async with get_client() as client:
        dep = await client.read_deployment_by_name("retrain/retrain")
        for _ in range(200):
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id={"any_": [dep.id]}))
            finished = [r for r in runs if r.state and r.state.is_final()]
            if finished:
                r = finished[0]
                print(json.dumps({"state": r.state.type.value, "id": str(r.id),
                                  "auto": r.auto_scheduled, "message": r.state.message}))
                return
            await asyncio.sleep(2)
        print(json.dumps({"state": "TIMEOUT"}))
asyncio.run(main())
""",
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert done["state"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
    assert done["auto"] is True  # made by the schedule, not by hand
    from mlflow import MlflowClient

    from tasks import tracking
    from tasks.config import TrackingConfig

    tracking.configure(
        TrackingConfig(uri=store["tracking.uri"], artifact_root=store["tracking.artifact_root"])
    )
    model = MlflowClient().get_registered_model("glassbox-breast_cancer")
    assert {"champion", "challenger"} <= set(model.aliases)
    (event, *_) = tracking.history("glassbox-breast_cancer")
    assert event["prefect.flow_run_id"] == done["id"]
