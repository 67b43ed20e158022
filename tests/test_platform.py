"""`glassbox up` for real: every part started as its own process on free ports, a CLI run that
uses the standing Prefect server and Dask cluster and links both ways, runs triggered in the
Prefect UI and compared in the MLflow UI in a real browser, and `glassbox down` leaving nothing.

The tests run in file order against one platform: the last one stops it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import GLASSBOX, ROOT, free_port, in_terminal

pytestmark = pytest.mark.deployment


def _glassbox(env, *args, timeout=400):
    return subprocess.run(
        [GLASSBOX, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("platform")
    ports = {k: free_port() for k in ("prefect", "mlflow", "dask", "dashboard")}
    # A user's shell: no store or Prefect API chosen (mlflow.set_tracking_uri in this process
    # exports MLFLOW_TRACKING_URI, which a child would take as the user's choice).
    shell = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")
    }
    env = {
        **shell,
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
    parts = (
        "mlflow",
        "prefect-server",
        "dask-scheduler",
        "dask-worker",
        "prefect-worker",
        "runner",
    )
    for part in parts:
        assert f"{part}" in first and "started in" in first
    assert "prefect.yaml deployed" in first
    before = sorted(p.pid for p in _processes(up["home"]))
    again = _glassbox(up["env"], "up", *up["args"], "--no-deploy")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already running") == 6
    assert sorted(p.pid for p in _processes(up["home"])) == before
    assert httpx.get(f"{up['mlflow']}/health").status_code == 200
    assert httpx.get(f"{up['prefect']}/api/health").status_code == 200
    status = _glassbox(up["env"], "status").stdout
    assert status.count(" up ") == 6 and up["store"] in status
    # every listening socket of the platform is on loopback
    for proc in _processes(up["home"]):
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                assert conn.laddr.ip == "127.0.0.1", (proc.cmdline(), conn)


def test_the_standing_cluster_has_imported_what_a_run_needs_before_the_first_run(up):
    """The first run after `up` does not wait for the workers to import shap, seaborn and
    pyplot, nor for the scheduler to import the modules of the tasks it is sent."""
    from distributed import Client

    from tasks.platform import RUN_MODULES

    drawing = ("shap", "seaborn", "matplotlib.pyplot")
    with Client(f"tcp://127.0.0.1:{up['ports']['dask']}", timeout="30s") as client:
        workers = client.run(lambda: [m for m in (*RUN_MODULES, *drawing) if m in sys.modules])
        scheduler = client.run_on_scheduler(
            lambda dask_scheduler: [m for m in RUN_MODULES if m in sys.modules]
        )
    assert workers and all(found == [*RUN_MODULES, *drawing] for found in workers.values())
    assert scheduler == list(RUN_MODULES)


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


def _worker_pids(up) -> list[int]:
    from distributed import Client

    with Client(f"tcp://127.0.0.1:{up['ports']['dask']}", timeout="30s") as client:
        return sorted(client.run(os.getpid).values())


def test_edited_code_reaches_the_standing_workers(up):
    """After an edit under tasks/, the next run restarts the standing workers (they would run
    the old code) when nobody else uses them; when another client does, it leaves them and
    says so."""
    sets = ["train.num_boost_round=5", "explain.enabled=false", "tracking.experiment=edited"]
    quick = ["train", "wine", *[a for s in sets for a in ("--set", s)]]
    # another client holds data on the cluster: the workers are left alone, the run says why
    from distributed import Client

    before = _worker_pids(up)
    os.utime(ROOT / "tasks" / "names.py")  # an edit
    with Client(f"tcp://127.0.0.1:{up['ports']['dask']}", timeout="30s") as other:
        held = other.scatter(list(range(10)))
        out = _glassbox(up["env"], *quick)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "run code older than names.py and another run is using them" in out.stderr
        assert _worker_pids(up) == before
        del held
    # alone on the cluster: restarted, with the new code (started after the edit: the next run
    # has nothing to restart)
    out = _glassbox(up["env"], *quick)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Restarted the standing Dask workers: they ran code older than names.py" in out.stderr
    after = _worker_pids(up)
    assert len(after) == len(before) and not set(after) & set(before)
    edited = (ROOT / "tasks" / "names.py").stat().st_mtime
    assert all(psutil.Process(pid).create_time() > edited for pid in after)


def _runner_log(up) -> str:
    return (up["home"] / "logs" / "runner.log").read_text()


def _slow_fraud(up) -> subprocess.Popen:
    """`glassbox train` as a terminal runs it (a session of its own), returned once it trains."""
    sets = ["data.rows=60000", "explain.enabled=false", "train.num_boost_round=5000"]
    sets.append("train.early_stopping_rounds=null")
    argv = ["train", "fraud", *[a for s in sets for a in ("--set", s)]]
    return in_terminal(argv, up["env"], "round 25:")[0]


def _runner_children(up) -> list[psutil.Process]:
    state = json.loads((up["home"] / "platform.json").read_text())
    return psutil.Process(state["processes"]["runner"]["pid"]).children(recursive=True)


def test_commands_run_in_the_warm_runner_with_the_users_output_exit_status_and_signals(up):
    import signal

    # the child writes to the command's own stdout and stderr, and its exit status comes back
    bad = _glassbox(up["env"], "train", "--set", "train.num_boost_round=0")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "glassbox: invalid config: train.num_boost_round: Input should be greater than or "
        "equal to 1 (got 0)"
    ]
    assert "glassbox train --set train.num_boost_round=0" in _runner_log(up)
    assert "exited with 2" in _runner_log(up)
    # Ctrl-C reaches the command's group; the command hands it to the run
    proc = _slow_fraud(up)
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert rest.strip().splitlines()[-1].startswith("glassbox: interrupted")
    # kill -9 of the command: the runner ends its run (SIGTERM), nothing of it is left
    proc = _slow_fraud(up)
    proc.kill()
    proc.wait()
    deadline = time.time() + 30
    while _runner_children(up) and time.time() < deadline:
        time.sleep(0.5)
    assert _runner_children(up) == []
    from mlflow import MlflowClient

    client = MlflowClient(up["store"])
    runs = client.search_runs(
        [client.get_experiment_by_name("glassbox-fraud").experiment_id],
        order_by=["attributes.start_time ASC"],
    )
    reasons = [(r.info.status, r.data.tags.get("glassbox.failure_reason")) for r in runs[-2:]]
    assert reasons == [
        ("KILLED", "interrupted (Ctrl-C, SIGINT)"),
        ("FAILED", "terminated by SIGTERM"),
    ]


def test_a_config_error_in_a_deployment_run_is_one_line(up):
    """A wrong key in the form's overrides: the run fails with the one-line reason as its state
    message and in its log, with no traceback."""
    code = """
import json
from prefect.deployments import run_deployment
run = run_deployment("train/train", timeout=300, poll_interval=1,
                     parameters={"preset": "wine", "overrides": {"train.num_boost_roun": 5}})
print(json.dumps({"id": str(run.id), "state": run.state.type.value,
                  "message": run.state.message}))
"""
    env = {**up["env"], "PREFECT_API_URL": f"{up['prefect']}/api"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=360
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    reason = "train.num_boost_roun: unknown key (did you mean 'num_boost_round'?)"
    assert run["state"] == "FAILED"
    assert reason in run["message"] and "\n" not in run["message"].strip()
    logs = httpx.post(
        f"{up['prefect']}/api/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [run["id"]]}}},
    ).json()
    text = "\n".join(entry["message"] for entry in logs)
    assert reason in text
    assert "Traceback" not in text
    # the work pool handed the run to the warm runner
    assert f"flow run {run['id']}" in _runner_log(up)


def test_a_deployment_run_starts_in_the_warm_runner_and_a_cancel_ends_it(up):
    """The pool's command hands each flow run to the runner (no workspace supervisor, no
    imports); a cancel from Prefect still reaches the run: Cancelled, its MLflow run KILLED with
    the reason, nothing of it left in the runner."""
    pool = httpx.get(f"{up['prefect']}/api/work_pools/glassbox").json()
    command = pool["base_job_template"]["variables"]["properties"]["command"]["default"]
    assert command.split()[-3:] == ["tasks.runner", "engine", str(up["home"] / "runner.sock")]
    slow = {
        "data.rows": 60000,
        "explain.enabled": False,
        "train.num_boost_round": 5000,
        "train.early_stopping_rounds": None,
        "tracking.experiment": "cancelled-deployment",
    }
    code = f"""
import asyncio, json, time
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.deployments import run_deployment
from prefect.states import Cancelling

async def main():
    run = await run_deployment("train/train", timeout=0,
                               parameters={{"preset": "fraud", "overrides": {slow!r}}})
    async with get_client() as client:
        for _ in range(600):  # until it trains: its log says a round
            mine = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            if any("round 25:" in log.message for log in await client.read_logs(mine)):
                break
            await asyncio.sleep(0.5)
        await client.set_flow_run_state(run.id, Cancelling())
        for _ in range(240):
            run = await client.read_flow_run(run.id)
            if run.state.is_final():
                break
            await asyncio.sleep(0.5)
    print(json.dumps({{"id": str(run.id), "state": run.state.type.value}}))

asyncio.run(main())
"""
    env = {**up["env"], "PREFECT_API_URL": f"{up['prefect']}/api"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=400
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert run["state"] == "CANCELLED"
    assert f"flow run {run['id']}" in _runner_log(up)
    deadline = time.time() + 30
    while _runner_children(up) and time.time() < deadline:
        time.sleep(0.5)
    assert _runner_children(up) == []
    from mlflow import MlflowClient

    client = MlflowClient(up["store"])
    (mlflow_run,) = client.search_runs(
        [client.get_experiment_by_name("cancelled-deployment").experiment_id]
    )
    assert mlflow_run.info.status == "KILLED"
    assert "cancelled" in mlflow_run.data.tags["glassbox.failure_reason"]


@pytest.mark.browser
def test_a_run_from_the_prefect_ui_links_to_its_mlflow_run_and_back(up, page):
    from playwright.sync_api import expect

    prefect, mlflow = up["prefect"], up["mlflow"]
    page.goto(f"{prefect}/deployments")
    page.get_by_role("link", name="train", exact=True).first.click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").click()

    def field(name):
        label = page.get_by_text(f"{name} (Optional)", exact=True)
        return page.locator(".schema-form-property", has=label).last

    # the form says what an empty field means for each preset
    expect(field("num_boost_round")).to_contain_text("wine 200")
    field("preset").locator("button.p-select-button__control").press("Space")
    page.get_by_role("option", name="wine", exact=True).click()
    rounds = field("num_boost_round")
    rounds.get_by_role("button", name="int", exact=True).click()
    rounds.locator("input").fill("-5")  # out of range: refused, no run is created
    page.get_by_role("button", name="Submit").click()
    expect(rounds).to_contain_text("not valid")
    expect(page).to_have_url(re.compile(r"/run\?"))
    rounds.locator("input").fill("30")
    expect(rounds).not_to_contain_text("not valid")
    failed = []  # the API's refusals, for the message if the run is not created
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else 0)
    page.get_by_role("button", name="Submit").click()
    view = page.get_by_role("button", name="View run").first
    oops = page.get_by_text("Something went wrong")
    expect(view.or_(oops).first).to_be_visible(timeout=60_000)
    if not view.is_visible():
        # Seen once in CI under load (the server logged no error): a user submits again.
        print("Prefect UI refused the first submit:", failed)
        page.get_by_role("button", name="Submit").click()
    toast = page.locator("p", has=view).first.inner_text()
    created = re.search(r"(\S+) scheduled to start now", toast).group(1)
    # two toast containers overlap; the button's own click handler opens the run
    view.dispatch_event("click")
    try:
        expect(page).to_have_url(re.compile(r"/runs/flow-run/"), timeout=10_000)
    except AssertionError:
        # Seen once in CI under load: the toast's button did not navigate. A user then opens
        # the run by its name in the deployment's Runs tab.
        print(f"the toast's View run did not open {created}; opening it from the Runs tab")
        page.goto(page.url.split("?")[0] + "?tab=Runs")
        page.get_by_role("link", name=created, exact=True).first.click()
        expect(page).to_have_url(re.compile(r"/runs/flow-run/"))
    flow_run_url = page.url
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible(timeout=300_000)
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("mlflow-run", exact=True).first.click()
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="open the run in MLflow").click()
    run_page = opened.value
    expect(run_page).to_have_url(re.compile(re.escape(mlflow) + r"/#/experiments/\d+/runs/\w+"))
    # the MLflow run has the flow run's name and links back to it
    run_name = flow_run_url.rsplit("/", 1)[-1]
    back = run_page.locator(f'a[href="{prefect}/runs/flow-run/{run_name}"]')
    expect(back).to_be_visible(timeout=60_000)
    expect(run_page.get_by_role("heading", name=back.inner_text())).to_be_visible()
    # its Model metrics tab opens on the per-round curves; single values come after
    run_page.get_by_role("tab", name="Model metrics").click()
    expect(run_page.get_by_text("curves", exact=True)).to_be_in_viewport()
    expect(run_page.get_by_text("valid-mlogloss", exact=True).first).to_be_in_viewport()
    # its figures are there
    run_page.get_by_role("tab", name="Artifacts").click()
    run_page.get_by_text("figures", exact=True).first.click()
    run_page.get_by_text("roc.png", exact=True).first.click()
    expect(run_page.get_by_role("img", name="figures/roc.png")).to_be_visible()
    # the run used the form's values
    from mlflow import MlflowClient

    run_id = run_page.url.rsplit("/runs/", 1)[-1].split("/")[0]
    params = MlflowClient(up["store"]).get_run(run_id).data.params
    assert (params["data.source"], params["train.num_boost_round"]) == ("builtin:wine", "30")


@pytest.mark.browser
def test_two_runs_side_by_side_in_the_mlflow_compare_view(up, page):
    from mlflow import MlflowClient
    from playwright.sync_api import expect

    client = MlflowClient(up["store"])
    exp = client.get_experiment_by_name("glassbox-wine")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) >= 2, "the CLI run and the Prefect UI run"
    page.goto(
        f"{up['mlflow']}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
    )
    for run in runs[:2]:
        page.locator(f'[row-id="{run.info.run_id}"] [ref="eWrapper"]').first.click()
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_text("Comparing 2 Runs")).to_be_visible()
    page.get_by_text("Show diff only").first.click()
    row = page.get_by_role("row", name=re.compile(r"^train\.num_boost_round"))
    expect(row).to_contain_text("12")
    expect(row).to_contain_text("30")
    expect(page.get_by_role("row", name=re.compile(r"^data\.source"))).to_have_count(0)
    page.get_by_role("switch", name="Metrics - Show diff only").click()
    names, values = page.get_by_role("grid").first, page.get_by_role("grid").last
    expect(names.get_by_role("link", name="best_valid-mlogloss", exact=True)).to_be_visible()
    expect(names.get_by_role("link", name="data_train_rows", exact=True)).to_have_count(0)
    for run in runs[:2]:
        expect(values).to_contain_text(f"{run.data.metrics['best_valid-mlogloss']:.3g}")


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
