"""MLflow runs: the store (configured once, checked before any compute), a run per flow run and
its child runs, how a run ends (FINISHED, FAILED or KILLED with the reason), params and metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from tasks.config import TrackingConfig

if TYPE_CHECKING:
    pass

FAILURE_TAG = "glassbox.failure_reason"
PREFECT_RUN_TAG = "prefect.flow_run_id"
CURVES = "curves/"  # prefix of the per-round metrics
_BATCH = 1000  # MLflow's limit of entries in one log_batch call
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def configure(cfg: TrackingConfig) -> None:
    """Point MLflow at the configured store; create and migrate a local sqlite store once.

    Concurrent first-time migrations of one sqlite file break it ("duplicate column name",
    alembic's "expected to match one row"): processes that open a store take a file lock beside
    it while MLflow creates or migrates the schema.
    """
    mlflow.set_tracking_uri(cfg.uri)
    mlflow.set_registry_uri(cfg.uri)
    if cfg.uri.startswith("sqlite:///"):
        db = Path(cfg.uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(db.with_name(db.name + ".lock")):
            MlflowClient().search_experiments(max_results=1)  # creates/migrates the schema
    else:
        MlflowClient().search_experiments(max_results=1)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on one machine (released if the holder dies)."""
    import fcntl

    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


STORE_TIMEOUT = 5.0  # seconds a tracking server gets to answer its health check


def check_store(cfg: TrackingConfig, experiment: str | None = None) -> None:
    """The tracking store answers and its folders take files, and an existing `experiment`
    keeps its artifacts where the config says: checked in at most `STORE_TIMEOUT` seconds,
    before data is read, a cluster starts or a run exists. Creates no store that is not there.

    Raises:
        ConfigError: one line naming the key, the address or folder, and the reason.
    """
    from tasks.config import ConfigError

    uri = cfg.uri
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=STORE_TIMEOUT):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise ConfigError(
                    f"tracking.uri: the server at {uri} answers HTTP {exc.code}"
                ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"tracking.uri: no MLflow server answers at {uri} ({reason}); start one "
                "(`glassbox up`, `mlflow server`) or set tracking.uri"
            ) from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if db.is_dir():
            raise ConfigError(f"tracking.uri: {db} is a folder, not a sqlite file")
        _check_folder(db.parent, "tracking.uri")
        if not db.exists():
            experiment = None  # a new store: every experiment is new
    if not uri.startswith(("http://", "https://", "databricks")):
        _check_folder(Path(cfg.artifact_folder), "tracking.artifact_root")
    if experiment:
        configure(cfg)
        exp = MlflowClient().get_experiment_by_name(experiment)
        if exp is not None:
            _check_experiment_location(cfg, experiment, exp.artifact_location)


def _check_folder(path: Path, key: str) -> None:
    """`path` is a folder that can be written, or can be made in one."""
    import os

    from tasks.config import ConfigError

    path = path.expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {existing} is not writable")


def _check_experiment_location(cfg: TrackingConfig, experiment: str, location: str | None) -> None:
    """An existing experiment keeps the artifact location it was created with: say so when it
    is not the configured one, or cannot take files."""
    from urllib.parse import unquote, urlparse

    from tasks.config import ConfigError

    if not location:
        return
    parsed = urlparse(location)
    local = parsed.scheme in ("", "file")
    if cfg.artifact_root and local:
        configured = Path(cfg.artifact_root).expanduser().resolve()
        if Path(unquote(parsed.path)).resolve() != configured:
            raise ConfigError(
                f"tracking.artifact_root: experiment '{experiment}' keeps its artifacts in "
                f"{location}, not {configured}; set tracking.experiment to a new name to use "
                "the new folder"
            )
    if local:
        _check_folder(
            Path(unquote(parsed.path)),
            f"tracking: the artifact location of experiment '{experiment}'",
        )


def safe_key(name: str) -> str:
    """A metric/param key MLflow accepts, from any text (class names, column names)."""
    return _UNSAFE.sub("_", name)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"params": {"eta": 0.1}}}` -> `{"train.params.eta": 0.1}`."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass(frozen=True)
class RunRef:
    """Where a run lives: enough to link to it."""

    run_id: str
    experiment_id: str
    url: str | None  # MLflow UI page of the run, when a UI address is known
    artifact_uri: str = ""


@contextmanager
def mlflow_run(
    cfg: TrackingConfig, *, experiment: str, run_name: str | None, tags: dict[str, str]
) -> Iterator[RunRef]:
    """Configure MLflow, create a run, yield it, and end it FINISHED, or FAILED/KILLED with
    the reason as a tag.

    Whatever was logged before a failure stays in the run.
    """
    import json

    from tasks import processes

    configure(cfg)
    client = MlflowClient()
    experiment_id = _experiment(cfg, experiment)
    tags = {**tags, PROCESS_TAG: json.dumps(processes.identity())}
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    base = cfg.ui_url or (cfg.uri if cfg.uri.startswith(("http://", "https://")) else None)
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if base else None
    try:
        yield RunRef(run_id, experiment_id, url, run.info.artifact_uri)
    except BaseException as exc:
        reason = _reason(exc)
        status = "KILLED" if reason.startswith(("interrupted", "cancelled")) else "FAILED"
        client.set_tag(run_id, FAILURE_TAG, reason[:5000])
        client.set_terminated(run_id, status)
        raise
    client.set_terminated(run_id, "FINISHED")


PARENT_TAG = "mlflow.parentRunId"  # MLflow nests a run under its parent in the runs list


def log_child_run(
    parent: RunRef,
    *,
    name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    curves: Mapping[str, list[float]] | None = None,
    tags: Mapping[str, str] | None = None,
    failure: str | None = None,
    span: tuple[float, float] | None = None,
) -> str:
    """A finished child run of `parent` (one sweep trial) in as few requests as MLflow takes:
    create, one batch of params, metrics, per-round `curves` and tags, end. Ended FAILED with
    `failure` as the reason when given; `span` (start, end in epoch seconds) is when the work
    ran, so that the runs list shows its duration. Returns its id.

    Only the flow's process calls this: trials on workers return their numbers (concurrent
    writers would lock a sqlite store)."""
    from mlflow.entities import RunTag

    client = MlflowClient()
    start, end = (int(t * 1000) for t in span) if span else (None, None)
    run = client.create_run(
        parent.experiment_id,
        start_time=start,
        run_name=name,
        tags={**(tags or {}), PARENT_TAG: parent.run_id},
    )
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        points = [Metric(safe_key(k), float(v), now, 0) for k, v in metrics.items()]
        points += [
            Metric(safe_key(f"{CURVES}{key}"), float(v), now, step)
            for key, values in (curves or {}).items()
            for step, v in enumerate(values)
        ]
        items = [Param(safe_key(k), _param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100], synchronous=True)
        _log_metric_batch(run_id, points)
        if failure:
            client.log_batch(run_id, tags=[RunTag(FAILURE_TAG, failure[:5000])], synchronous=True)
    except BaseException:
        # Interrupted while logging: the child still ends (KILLED), not RUNNING for ever.
        client.set_terminated(run_id, "KILLED", end_time=end)
        raise
    client.set_terminated(run_id, "FAILED" if failure else "FINISHED", end_time=end)
    return str(run_id)


def child_runs(parent_run_id: str, experiment_id: str) -> list[Any]:
    """The runs nested under a parent, oldest first."""
    return list(
        MlflowClient().search_runs(
            [experiment_id],
            f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=10_000,
        )
    )


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    MlflowClient().log_batch(
        run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()], synchronous=True
    )


def _reason(exc: BaseException) -> str:
    """Why a run ended early, in words: a signal by name, else the exception."""
    import signal

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C, SIGINT)"
    number = getattr(exc, "signal", None)  # Prefect's TerminationSignal carries it
    if isinstance(number, int) and _prefect_cancel():
        return "cancelled from Prefect (the flow run was cancelled)"
    if isinstance(number, int):
        return f"terminated by {signal.Signals(number).name}"
    return f"{type(exc).__name__}: {exc}"


def _prefect_cancel() -> bool:
    """Whether the signal that ends this process is Prefect's runner cancelling the flow run."""
    try:
        from prefect._internal.control_listener import get_intent
    except ImportError:
        return False
    return get_intent() == "cancel"


PROCESS_TAG = "glassbox.process"


def end_orphaned_runs() -> list[str]:
    """Runs left RUNNING by a process of this host that has died (`kill -9`, out of memory, a
    lost machine): ended FAILED with the reason. Returns their ids."""
    import json

    from tasks import processes

    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    ended = []
    for i in range(0, len(ids), 100):
        for run in client.search_runs(
            ids[i : i + 100], filter_string="attributes.status = 'RUNNING'", max_results=1000
        ):
            try:
                who = json.loads(run.data.tags[PROCESS_TAG])
            except (KeyError, ValueError):
                continue
            if processes.alive(who) is False:
                client.set_tag(
                    run.info.run_id,
                    FAILURE_TAG,
                    f"its process (pid {who['pid']} on {who['host']}) died without ending it "
                    "(kill -9, out of memory?); marked FAILED by the next run",
                )
                client.set_terminated(run.info.run_id, "FAILED")
                ended.append(run.info.run_id)
    return ended


def _experiment(cfg: TrackingConfig, name: str) -> str:
    """The experiment's id, made (in the configured artifact folder) if it is new. Runs
    started together may race to make it: the loser takes the winner's."""
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if not cfg.uri.startswith(("http://", "https://", "databricks")):
            location = (Path(cfg.artifact_folder).resolve()).as_uri()
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except MlflowException:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    _check_experiment_location(cfg, name, exp.artifact_location)
    return str(exp.experiment_id)


def mark_failed(flow_run_id: str, reason: str) -> list[str]:
    """End every unfinished run tagged with a Prefect flow-run id as FAILED (crash hooks)."""
    client = MlflowClient()
    runs = client.search_runs(
        [exp.experiment_id for exp in client.search_experiments()],
        f"tags.`{PREFECT_RUN_TAG}` = '{flow_run_id}' and attributes.status = 'RUNNING'",
    )
    for run in runs:
        client.set_tag(run.info.run_id, FAILURE_TAG, reason[:5000])
        client.set_terminated(run.info.run_id, "FAILED")
    return [run.info.run_id for run in runs]


def log_params(run_id: str, params: Mapping[str, Any]) -> None:
    """Log params (values as text), 100 per request."""
    items = [Param(safe_key(k), _param_text(v)) for k, v in params.items()]
    client = MlflowClient()
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100], synchronous=True)


def _param_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) if value else "[]"
    return str(value)[:6000]


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log scalar metrics in one batch."""
    now = int(time.time() * 1000)
    _log_metric_batch(
        run_id, [Metric(safe_key(k), float(v), now, step) for k, v in metrics.items()]
    )


def log_history(run_id: str, history: Mapping[str, Mapping[str, list[float]]]) -> None:
    """Log XGBoost's evaluation history as step metrics `curves/<data>-<metric>`, one point
    per round.

    The `curves/` prefix is a section of its own in MLflow's Model metrics tab, ahead of the
    section of single-value metrics (MLflow sorts prefixed sections by name and puts the
    unprefixed "Model metrics" last), so a run opens on its learning curves.
    Batched: one `log_metric` call per point costs seconds per thousand points on sqlite.
    """
    now = int(time.time() * 1000)
    _log_metric_batch(
        run_id,
        [
            Metric(safe_key(f"{CURVES}{data}-{metric}"), float(v), now, step)
            for data, metrics in history.items()
            for metric, values in metrics.items()
            for step, v in enumerate(values)
        ],
    )


def _log_metric_batch(run_id: str, metrics: list[Metric]) -> None:
    client = MlflowClient()
    for i in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + _BATCH], synchronous=True)
