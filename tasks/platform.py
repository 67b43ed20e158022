"""The local platform behind `glassbox up|down|status`: a Prefect server, an MLflow server on the
store the CLI writes to, a standing Dask cluster (scheduler and workers as processes of their own)
and a process worker on the `glassbox` work pool, with `prefect.yaml` deployed.

Everything binds to 127.0.0.1. The platform's state (ports, process ids, the store it serves)
is one JSON file in its home, `.glassbox/` under the working folder (or `$GLASSBOX_HOME`); logs
are `<home>/logs/<part>.log`. While it is up, runs (`glassbox train`, deployment runs) find it
there and use its Prefect server, its cluster and its MLflow UI address for links.

Here: the plan of processes and what a run takes from the platform (pure), and the state file
every run reads. Starting, health-checking and stopping the processes is
`tasks.platform_processes`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import runner

if TYPE_CHECKING:
    from tasks.config import PipelineConfig

HOME_ENV = "GLASSBOX_HOME"
POOL = "glassbox"
STATE_FILE = "platform.json"
BIN = Path(sys.executable).parent
# Start order; `down` stops them in reverse.
PARTS = ("mlflow", "prefect-server", "dask-scheduler", "dask-worker", "prefect-worker", "runner")


class PlatformError(RuntimeError):
    """A part of the platform did not start or answer; the message says which and where its
    log is."""


@dataclass(frozen=True)
class Ports:
    prefect: int = 4200
    mlflow: int = 5000
    scheduler: int = 8786
    dashboard: int = 8787


@dataclass(frozen=True)
class Settings:
    """What `up` starts: ports, the store MLflow serves, the cluster's shape."""

    root: Path  # the project folder: deployments run here, relative paths resolve here
    home: Path
    store: str  # sqlite:////absolute/path.db
    artifact_root: Path
    ports: Ports = Ports()
    workers: int = 0  # CPU worker processes; 0: Dask's split of the cores (2 cores: 2 x 1)
    threads: int = 0  # per worker; 0: all cores shared among the workers
    gpus: int = 0

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.ports.prefect}/api"

    @property
    def prefect_ui(self) -> str:
        return f"http://127.0.0.1:{self.ports.prefect}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.mlflow}"

    @property
    def scheduler(self) -> str:
        return f"tcp://127.0.0.1:{self.ports.scheduler}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports.dashboard}/status"


@dataclass(frozen=True)
class Part:
    name: str
    argv: list[str]
    env: dict[str, str]
    url: str | None = None


@dataclass
class State:
    """The platform as `up` left it (read back by runs, `status` and `down`)."""

    root: str
    store: str
    artifact_root: str
    prefect_api: str
    prefect_ui: str
    mlflow_url: str
    scheduler: str
    dashboard: str
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> pid, args, log

    @classmethod
    def of(cls, settings: Settings, processes: dict[str, dict[str, Any]]) -> State:
        return cls(
            root=str(settings.root),
            store=settings.store,
            artifact_root=str(settings.artifact_root),
            prefect_api=settings.prefect_api,
            prefect_ui=settings.prefect_ui,
            mlflow_url=settings.mlflow_url,
            scheduler=settings.scheduler,
            dashboard=settings.dashboard,
            processes=processes,
        )


def home_dir() -> Path:
    """`$GLASSBOX_HOME`, else `.glassbox` in the working folder."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser().resolve() if env else Path.cwd().resolve() / ".glassbox"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, absolute (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///")).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path).resolve()


# The modules of the functions a run sends to the workers (no Prefect, no MLflow in them).
RUN_MODULES = (
    "xgboost.dask",
    "dask.dataframe",
    "tasks.cluster",
    "tasks.evaluation_figures",
    "tasks.lime_rows",
    "tasks.treeshap",
    "tasks.trials",
)
# The standing workers also import the libraries those modules import only when they first
# draw (without them, the first run after `up` imported shap, seaborn and pyplot in every
# worker).
WORKER_WARM = (*RUN_MODULES, "tasks.explanation_figures", "shap", "seaborn", "matplotlib.pyplot")


def worker_layout(settings: Settings) -> tuple[int, int]:
    """CPU worker processes and threads each. By default Dask's own split of the cores
    (`dask worker --nworkers auto`): single-threaded processes on small machines, so that
    figures, LIME and sweep trials (Python, one core per process) run side by side; training
    still uses every core, in one of them (`tasks.cluster.one_trainer`)."""
    from distributed.deploy.utils import nprocesses_nthreads

    cores = os.cpu_count() or 1
    if settings.workers:
        return settings.workers, settings.threads or max(1, cores // settings.workers)
    if settings.threads:
        return max(1, cores // settings.threads), settings.threads
    return nprocesses_nthreads(cores)


def dask_config(workers: int, threads: int) -> dict[str, Any]:
    """The standing workers' Dask settings: those of the per-run local cluster, as nested YAML
    (`DASK_CONFIG`), because environment variables cannot carry the upper-case names of
    `pre-spawn-environ`."""
    from tasks.cluster import _local_config

    config = _local_config(threads, workers * threads)
    # Standing workers start once: they also import what figures and explanations need, so
    # that the first run after `up` does not wait for shap, seaborn and scikit-learn. The
    # collector is tuned (`tasks.gc_tuning`) once they are all imported.
    config["distributed.worker.preload"] = list(
        dict.fromkeys([*WORKER_WARM, *config["distributed.worker.preload"]])
    )
    # The scheduler unpickles every task it is sent, importing its function's module: on the
    # first run after `up` that was 1,700 modules (pandas, scikit-learn, LIME, XGBoost), 1.5 s
    # of the scheduler's time while the run waited. It imports them as it starts.
    config["distributed.scheduler.preload"] = ["tasks.scheduler_preload"]
    nested: dict[str, Any] = {}
    for dotted, value in config.items():
        # keys are dotted paths whose last part may itself hold no dots (OMP_NUM_THREADS)
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def base_env(settings: Settings) -> dict[str, str]:
    """Environment of every platform process: the venv's tools first on PATH, the platform's
    home, Prefect's API, no telemetry."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        HOME_ENV: str(settings.home),
        "PREFECT_API_URL": settings.prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(settings.home / "prefect"),
        "MLFLOW_TRACKING_URI": settings.store,
    }


def plan(settings: Settings) -> list[Part]:
    """The processes of the platform, in start order (pure: builds commands, starts nothing)."""
    env = base_env(settings)
    workers, threads = worker_layout(settings)
    worker_env = {**env, "DASK_CONFIG": str(settings.home / "dask")}
    if settings.gpus:
        dask_worker = [str(BIN / "dask"), "cuda", "worker", settings.scheduler]
    else:
        from tasks.cluster import machine_memory

        dask_worker = [
            str(BIN / "dask"),
            "worker",
            settings.scheduler,
            "--nworkers",
            str(workers),
            "--nthreads",
            str(threads),
            # each, not shared: the worker that trains holds all the training data
            "--memory-limit",
            str(machine_memory()),
        ]
    dask_worker += [
        "--host",
        "127.0.0.1",
        "--no-dashboard",  # no Bokeh pages; the worker's HTTP server (health, metrics) stays
        "--dashboard-address",
        "127.0.0.1:0",
        "--local-directory",
        str(settings.home / "dask-worker-space"),
        "--name",
        "glassbox",
    ]
    return [
        Part(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                settings.store,
                "--default-artifact-root",
                settings.artifact_root.as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.ports.mlflow),
                "--workers",
                "1",
            ],
            # No GenAI job runner (seven huey processes Glassbox has no use for).
            {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            settings.mlflow_url,
        ),
        Part(
            "prefect-server",
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.ports.prefect),
            ],
            # The UI asks the API at this address: set before the server starts.
            {**env, "PREFECT_UI_API_URL": settings.prefect_api},
            settings.prefect_ui,
        ),
        Part(
            "dask-scheduler",
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.ports.scheduler),
                "--dashboard-address",
                f"127.0.0.1:{settings.ports.dashboard}",
            ],
            worker_env,
            settings.dashboard,
        ),
        Part("dask-worker", dask_worker, worker_env),
        Part(
            "prefect-worker",
            # Prefect's worker, with a cancel that takes 1.5 s, not 7 (`tasks.prefect_worker`)
            [
                sys.executable,
                "-m",
                "tasks.prefect_worker",
                "worker",
                "start",
                "--pool",
                POOL,
                "--type",
                "process",
            ],
            # A run from the UI starts within 2 s, not Prefect's default 10 (a user's setting wins).
            {"PREFECT_WORKER_QUERY_SECONDS": "2", **env},
        ),
        # Commands from this folder fork from it, with everything imported (`tasks.runner`).
        Part(
            "runner", [sys.executable, "-m", "tasks.runner", str(runner_socket(settings.home))], env
        ),
    ]


def runner_socket(home: Path) -> Path:
    return home / "runner.sock"


def engine_command(home: Path) -> str:
    """The command the work pool starts a flow run with: the run is handed to the warm runner
    (`tasks.runner.engine`), which falls back to `python -m prefect.engine` on its own."""
    import shlex

    return shlex.join(
        [sys.executable, "-m", "tasks.runner", runner.ENGINE, str(runner_socket(home))]
    )


def with_engine_command(template: dict[str, Any], command: str) -> dict[str, Any]:
    """A process work pool's base job template whose flow runs start with `command` unless a
    deployment or run sets its own (pure)."""
    import copy

    template = copy.deepcopy(template)
    template["variables"]["properties"]["command"]["default"] = command
    return template


def for_run(cfg: PipelineConfig, state: State | None) -> PipelineConfig:
    """What a run takes from a running platform (pure): the standing cluster when the config
    leaves the cluster to `auto`; the platform's store when no store was chosen (config, --set
    or $MLFLOW_TRACKING_URI); and the MLflow UI's address for links when the run writes to the
    store that UI serves. A config that says otherwise wins."""
    if state is None:
        return cfg
    update: dict[str, Any] = {}
    if cfg.cluster.kind == "auto" and "dask-scheduler" in state.processes:
        update["cluster"] = cfg.cluster.model_copy(
            update={"kind": "address", "address": state.scheduler}
        )
    tracking: dict[str, Any] = {}
    uri = cfg.tracking.uri
    from tasks.config import DEFAULT_STORE

    if "uri" not in cfg.tracking.model_fields_set and uri == DEFAULT_STORE:
        # nobody chose a store: the platform's
        uri = tracking["uri"] = state.store
    served = sqlite_path(state.store)
    if served is not None and sqlite_path(uri) == served:
        if cfg.tracking.ui_url is None and "mlflow" in state.processes:
            tracking["ui_url"] = state.mlflow_url
        if cfg.tracking.artifact_root is None:
            tracking["artifact_root"] = state.artifact_root
    if tracking:
        update["tracking"] = cfg.tracking.model_copy(update=tracking)
    return cfg.model_copy(update=update) if update else cfg


def flow_run_url(ui: str, flow_run_id: str) -> str:
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


# --- the state file (read by every run) ------------------------------------------------------


def read_state(home: Path) -> State | None:
    try:
        raw = json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return State(**raw)


def write_state(home: Path, state: State) -> None:
    tmp = home / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(home / STATE_FILE)


def still_ours(record: dict[str, Any]) -> bool:
    """The recorded process is still the one `up` started, not a recycled pid: its command line
    ends with the arguments `up` gave it. (Start times are no proof here: a VM's wall clock can
    step, and psutil derives start times from it.)"""
    import psutil

    try:
        proc = psutil.Process(int(record["pid"]))
        args = list(record["args"])
        return proc.status() != psutil.STATUS_ZOMBIE and proc.cmdline()[-len(args) :] == args
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


def running(home: Path | None = None) -> State | None:
    """The platform's state when it is up, with only the parts that are alive; else None.

    Cheap (a file and a few pids), so every run can ask."""
    state = read_state(home or home_dir())
    if state is None:
        return None
    state.processes = {k: v for k, v in state.processes.items() if still_ours(v)}
    return state if state.processes else None
