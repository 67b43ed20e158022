"""What Glassbox costs over a plain script: `glassbox train conf/fraud.yaml` against the same
stages written plainly (`plain_fraud.py`), as whole processes, interleaved A/B pairs, with a
persistent Prefect server as users of the UI have.

    .venv/bin/python benchmarks/overhead.py --pairs 5
    .venv/bin/python benchmarks/overhead.py --pairs 5 --platform   # against `glassbox up`

Prints every pair, then flow - plain in seconds, the ratio, a per-stage breakdown (Prefect
task-run durations against the plain script's stage timers) and the training-time ratio
(the Dask path against plain `xgboost.train` with the same threads). Targets: overhead at most
max(3 s, 5%), training at most 1.15x.

With `--platform` the flow runs against a `glassbox up` started for the benchmark (its Prefect
server, its standing Dask cluster); it then also times the default preset end to end with the
CLI (target 8 s; on the fresh platform and after the fraud runs) and as a deployment run
through the platform's worker.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Prefect task -> the plain script's stage(s) that do the same work.
STAGES = {
    # load-data reads, validates and splits; write-splits writes them for the workers;
    # record-data logs the data set while the model trains.
    "load-data": ["load", "split"],
    "write-splits": [],
    "record-data": [],
    "train-xgboost": ["train"],
    "evaluate-model": ["evaluate", "figures"],
    "log-model": ["save_model"],
}


def start_prefect_server(home: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    proc = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(240):
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return proc, env
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("prefect server did not start")


def start_platform(tmp: Path, up_args: list[str]) -> dict[str, str]:
    """`glassbox up` on free ports, its state in tmp; returns the environment runs use."""
    ports = {}
    for name in ("prefect", "mlflow", "dask", "dashboard"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports[name] = s.getsockname()[1]
    env = {
        **os.environ,
        "GLASSBOX_HOME": str(tmp / "home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    args = [f"--{k}-port={v}" for k, v in ports.items()]
    out = _glassbox(env, "up", *args, *up_args, "--set", f"tracking.uri=sqlite:///{tmp}/mlflow.db")
    if out.returncode:
        raise SystemExit(f"glassbox up failed:\n{out.stdout}{out.stderr}")
    return {**env, "PREFECT_API_URL": f"http://127.0.0.1:{ports['prefect']}/api"}


def _glassbox(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "glassbox", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def stop_platform(env: dict[str, str]) -> None:
    _glassbox(env, "down")


def run_default(env: dict[str, str], tmp: Path) -> float:
    """`glassbox train` on the default preset, everything on (explanations too): wall seconds."""
    start = time.perf_counter()
    out = _glassbox(env, "train", "--set", f"tracking.uri=sqlite:///{tmp}/mlflow.db")
    if out.returncode:
        raise SystemExit(f"default run failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def run_deployment(env: dict[str, str], tmp: Path) -> dict[str, float]:
    """The default preset as a deployment run through the platform's worker: seconds from the
    request to completion, and the flow run's own duration."""
    code = f"""
import json, time
from prefect.deployments import run_deployment
t0 = time.perf_counter()
run = run_deployment("train/train", timeout=600, poll_interval=0.5,
                     parameters={{"overrides": {{"tracking.uri": "sqlite:///{tmp}/mlflow.db"}}}})
total = time.perf_counter() - t0
assert run.state.is_completed(), run.state
print(json.dumps({{"total": total, "flow": (run.end_time - run.start_time).total_seconds()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"deployment run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_flow(env: dict[str, str], tmp: Path, extra: list[str]) -> dict:
    store = [
        # The plain script has no SHAP stage yet: compare like with like.
        "explain.enabled=false",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        f"tracking.artifact_root={tmp}/artifacts",
        f"data.workspace={tmp}/workspace",
        *extra,
    ]
    cmd = [BIN / "glassbox", "train", "conf/fraud.yaml", *[a for s in store for a in ("--set", s)]]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"flow failed:\n{out.stderr[-3000:]}")
    run_id = next(x for x in out.stdout.splitlines() if x.startswith("MLflow run: ")).split()[2]
    return {"wall": wall, "run_id": run_id, **flow_details(env, tmp, run_id)}


def flow_details(env: dict[str, str], tmp: Path, run_id: str) -> dict:
    """Per-task durations from the Prefect API; training seconds and rounds from MLflow."""
    code = f"""
import json, uuid
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
run = MlflowClient("sqlite:///{tmp}/mlflow.db").get_run("{run_id}")
flow_run_id = uuid.UUID(run.data.tags["prefect.flow_run_id"])
def union(spans):
    merged = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return merged
with get_client(sync_client=True) as client:
    runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    tasks = client.read_task_runs(flow_run_filter=runs)
print(json.dumps({{
    "tasks": {{t.name.rsplit("-", 1)[0]:
               (t.end_time - t.start_time).total_seconds() for t in tasks}},
    "busy": sum((e - s).total_seconds()
                for s, e in union([(t.start_time, t.end_time) for t in tasks])),
    "train_seconds": run.data.metrics["train_seconds"],
    "rounds": int(run.data.metrics["rounds_trained"]),
}}))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"could not read the flow's details:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_plain(tmp: Path) -> dict:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, ROOT / "benchmarks" / "plain_fraud.py", "--out", tmp / "plain"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"plain script failed:\n{out.stderr[-3000:]}")
    return {"wall": wall, **json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        help="extra config overrides for the flow (key=value)",
    )
    parser.add_argument(
        "--platform", action="store_true", help="run against `glassbox up` (standing cluster)"
    )
    parser.add_argument(
        "--up-args", default="", help="more `glassbox up` options, e.g. '--workers 1 --threads 2'"
    )
    args = parser.parse_args()
    extra_lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="glassbox-bench-") as name:
        tmp = Path(name)
        if args.platform:
            server, env = None, start_platform(tmp, args.up_args.split())
        else:
            server, env = start_prefect_server(tmp / "prefect")
        try:
            before: list[float] = []
            if args.platform:
                print("default preset on the fresh platform: a warm-up run, then 3 timed")
                run_default(env, tmp)
                before = [run_default(env, tmp) for _ in range(3)]
            print("warm-up (not counted): one run of each; creates the MLflow store")
            run_flow(env, tmp, args.extra)
            run_plain(tmp)
            pairs = []
            for i in range(args.pairs):
                if i % 2 == 0:
                    flow, plain = run_flow(env, tmp, args.extra), run_plain(tmp)
                else:
                    plain, flow = run_plain(tmp), run_flow(env, tmp, args.extra)
                pairs.append((flow, plain))
                print(
                    f"pair {i + 1}: flow {flow['wall']:6.2f} s   plain {plain['wall']:6.2f} s   "
                    f"diff {flow['wall'] - plain['wall']:+5.2f} s   "
                    f"rounds {flow['rounds']}/{plain['rounds']}"
                )
            if args.platform:
                cli = [run_default(env, tmp) for _ in range(3)]
                runs = [run_deployment(env, tmp) for _ in range(3)]
                med = statistics.median
                extra_lines = [
                    f"default preset, CLI with `glassbox up`, end to end, before the fraud "
                    f"runs: median {med(before):.2f} s ({', '.join(f'{c:.2f}' for c in before)}); "
                    f"after them: median {med(cli):.2f} s ({', '.join(f'{c:.2f}' for c in cli)}); "
                    f"target <= 8 s: {'met' if max(med(before), med(cli)) <= 8 else 'NOT met'}",
                    f"default preset as a deployment run through the worker: request to "
                    f"completion {med(r['total'] for r in runs):.2f} s, the flow run itself "
                    f"{med(r['flow'] for r in runs):.2f} s (medians of {len(runs)})",
                ]
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
            else:
                stop_platform(env)
    mode = (
        "glassbox up (standing Prefect server and Dask cluster)"
        if args.platform
        else ("a Prefect server, a Dask cluster per run")
    )
    print(f"\nmode: {mode}")
    report(pairs)
    print("\n".join(["", *extra_lines]) if extra_lines else "")


def report(pairs: list[tuple[dict, dict]]) -> None:
    med = statistics.median
    flow_wall = med(f["wall"] for f, _ in pairs)
    plain_wall = med(p["wall"] for _, p in pairs)
    diffs = [f["wall"] - p["wall"] for f, p in pairs]
    overhead = med(diffs)
    target = max(3.0, 0.05 * plain_wall)
    print(
        f"\nwhole process, median of {len(pairs)} pairs: "
        f"flow {flow_wall:.2f} s, plain {plain_wall:.2f} s"
    )
    print(f"flow - plain: {overhead:+.2f} s (pairs: {', '.join(f'{d:+.2f}' for d in diffs)})")
    print(f"ratio flow/plain: {flow_wall / plain_wall:.3f}")
    print(
        f"overhead target <= max(3 s, 5%) = {target:.2f} s: "
        f"{'met' if overhead <= target else 'NOT met'}"
    )

    print(f"\n{'stage':<16}{'flow task':>11}{'plain':>9}{'diff':>9}")
    for task, stages in STAGES.items():
        f = med(fl["tasks"].get(task, 0.0) for fl, _ in pairs)
        p = med(sum(pl["stages"][s] for s in stages) for _, pl in pairs)
        print(f"{task:<16}{f:>10.2f}s{p:>8.2f}s{f - p:>+8.2f}s")
    # log-model runs beside evaluate-model: the time inside tasks is the union of their spans.
    busy_f = med(fl["busy"] for fl, _ in pairs)
    busy_p = med(sum(pl["stages"].values()) for _, pl in pairs)
    print(
        f"{'all tasks':<16}{busy_f:>10.2f}s{busy_p:>8.2f}s{busy_f - busy_p:>+8.2f}s"
        "   (wall time inside tasks; log-model overlaps evaluate-model)"
    )
    rest_f, rest_p = flow_wall - busy_f, plain_wall - busy_p
    print(
        f"{'outside tasks':<16}{rest_f:>10.2f}s{rest_p:>8.2f}s{rest_f - rest_p:>+8.2f}s"
        "   (imports, Prefect/MLflow run set-up, cluster start/stop, process exit)"
    )

    f_train = med(f["train_seconds"] for f, _ in pairs)
    p_train = med(p["stages"]["train"] for _, p in pairs)
    f_round = med(f["train_seconds"] / f["rounds"] for f, _ in pairs)
    p_round = med(p["stages"]["train"] / p["rounds"] for _, p in pairs)
    print(
        f"\ntraining: Dask path {f_train:.2f} s, plain xgboost.train {p_train:.2f} s, "
        f"ratio {f_train / p_train:.3f} (per round {f_round * 1e3:.1f} vs {p_round * 1e3:.1f} ms, "
        f"ratio {f_round / p_round:.3f}); target <= 1.15: "
        f"{'met' if f_round / p_round <= 1.15 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
