"""The one home of MLflow: every helper takes the run id explicitly and uses `MlflowClient`.

`mlflow.active_run()` is per thread and Dask workers are other processes, so nothing here relies
on a fluent "current run". `configure` is called by the flow; importing this module does nothing.
"""

from __future__ import annotations

import functools
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, LoggedModelOutput, Metric, Param
from mlflow.pyfunc import PythonModel

from tasks.config import TrackingConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def log_table(run_id: str, table: pd.DataFrame, artifact_file: str) -> None:
    """A table artifact (JSON) that the MLflow UI shows as a table."""
    MlflowClient().log_table(run_id, data=table, artifact_file=artifact_file)


def log_file(run_id: str, path: str | Path, artifact_dir: str) -> None:
    """A local file, copied into the run's artifacts under `artifact_dir`."""
    MlflowClient().log_artifact(run_id, str(path), artifact_dir)


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    MlflowClient().log_text(run_id, text, artifact_file)


def log_figure(run_id: str, figure: Figure, artifact_file: str) -> None:
    """Log a matplotlib figure as PNG and close it, so memory does not grow with figures."""
    log_bytes(run_id, _closed_png(figure), artifact_file)


def _closed_png(figure: Figure) -> bytes:
    import matplotlib.pyplot as plt

    from tasks.figures import png

    try:
        return png(figure)
    finally:
        plt.close(figure)  # pyplot-made figures (shap's) stay registered until closed


def log_bytes(run_id: str, data: bytes, artifact_file: str) -> None:
    """A file artifact from bytes in memory, at `artifact_file` (a path inside the run)."""
    import tempfile

    target = Path(artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / target.name
        path.write_bytes(data)
        parent = target.parent.as_posix()
        MlflowClient().log_artifact(run_id, str(path), None if parent == "." else parent)


class ArtifactBatch:
    """Files written into a local folder, logged together when the batch closes."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, artifact_file: str) -> Path:
        path = self.root / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def text(self, artifact_file: str, text: str) -> None:
        self._path(artifact_file).write_text(text, encoding="utf-8")

    def write_bytes(self, artifact_file: str, data: bytes) -> None:
        self._path(artifact_file).write_bytes(data)


@contextmanager
def artifact_batch(run_id: str, artifact_path: str) -> Iterator[ArtifactBatch]:
    """Many small artifacts under `artifact_path` in one logging call instead of one each
    (~40 ms a call on a sqlite store; a hundred local-explanation files add up)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        yield ArtifactBatch(Path(tmp))
        MlflowClient().log_artifacts(run_id, tmp, artifact_path)


def log_dataset(run_id: str, data: pd.DataFrame, *, name: str, source: str, target: str) -> None:
    """Record the data set as a run input: name, digest, source and schema."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.pandas_dataset import PandasDataset
    from mlflow.types.utils import _infer_schema

    class SampledSchema(PandasDataset):
        # Column types are per column; MLflow's inference visits every row (4 s on 284k rows).
        @functools.cached_property
        def schema(self) -> Any:
            return _infer_schema(self._df.head(1000))

    with warnings.catch_warnings():
        # Hints about integer columns (the encoded target) and ambiguous local sources.
        warnings.simplefilter("ignore", UserWarning)
        src = (
            CodeDatasetSource({"glassbox.source": source})
            if source.startswith("builtin:")
            else resolve_dataset_source(str(Path(source).resolve()))
        )
        entity = SampledSchema(
            data, source=src, name=name, targets=target, digest=frame_digest(data)
        )._to_mlflow_entity()
    context = InputTag(key="mlflow.data.context", value="training")
    inputs = [DatasetInput(entity, tags=[context])]
    from mlflow.exceptions import MlflowException

    for attempt in range(3):
        try:
            MlflowClient().log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as exc:
            # Runs started together log the same data set: MLflow's sqlite store looks it up,
            # then inserts it, and the slower run hits the unique key. It exists now: again.
            if "UNIQUE constraint failed: datasets" not in str(exc) or attempt == 2:
                raise
            time.sleep(0.1)


def frame_digest(data: pd.DataFrame) -> str:
    """A digest of every row, index and columns included (MLflow's own hashes 10,000 rows
    cell by cell, which takes a second and misses changes further down)."""
    import hashlib

    import pandas as pd

    rows = pd.util.hash_pandas_object(data, index=True).to_numpy()
    columns = "\x1f".join(map(str, data.columns)).encode()
    return hashlib.sha256(rows.tobytes() + columns).hexdigest()[:16]


@dataclass(frozen=True)
class LoggedModel:
    uri: str
    model_id: str


class GlassboxModel(PythonModel):  # type: ignore[misc]
    """The registered model as MLflow serves it: raw rows in (strings, missing values, columns
    in any order, extra columns ignored), the training run's preprocessing applied
    (`tasks.serving`), labels by name out; `params={"predict_method": "predict_proba"}` gives
    a probability column per class."""

    def load_context(self, context: Any) -> None:
        import json

        import xgboost as xgb

        from tasks.serving import ModelCard

        self.card = ModelCard.from_json(Path(context.artifacts["card"]).read_text())
        self.booster = xgb.Booster(model_file=context.artifacts["booster"])
        # The drift check's summary of the training data (models logged before it have none).
        ref = context.artifacts.get("reference")
        self.reference = json.loads(Path(ref).read_text()) if ref else None
        # The raw inputs as training saw them (`glassbox app`'s form; older models have none).
        inputs = context.artifacts.get("inputs")
        self.inputs = json.loads(Path(inputs).read_text()) if inputs else None

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> Any:
        import pandas as pd

        from tasks import serving

        rows = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        method = (params or {}).get("predict_method", "predict")
        return serving.predict(self.booster, self.card, rows, method)


def model_signature(card: Any) -> Any:
    """The raw input as a user has it (one column per raw column the model reads, its type as
    loaded), the output (labels, or values), and the `predict_method` parameter."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec(AnyType() if c.raw_type == "any" else c.raw_type, c.name)
            for c in card.spec.columns
        ]
    )
    outputs = Schema([ColSpec(_label_type(card))])
    params = ParamSchema([ParamSpec("predict_method", "string", "predict")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _label_type(card: Any) -> str:
    """The served output's type: values, or the labels' own type (ints stay ints)."""
    if card.task == "regression":
        return "double"
    labels = card.labels or card.classes
    if all(isinstance(v, bool) for v in labels):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        return "long"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in labels):
        return "double"
    return "string"


def log_glassbox_model(
    run_id: str,
    booster_path: str,
    card: Any,
    input_example: pd.DataFrame,
    *,
    metadata: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
) -> LoggedModel:
    """Log the pyfunc model (booster in XGBoost's UBJSON format + the model card) into the
    run's own experiment and artifact location, linked to the run (registered separately, once
    the run has everything: `register_model`).

    Requirements are given explicitly: MLflow's inference of them costs seconds per model.
    The `tasks` package travels with the model (`code_paths`), so serving needs no install
    of Glassbox.
    """
    import tempfile

    import numpy as np
    import pandas as pd
    import pydantic
    import xgboost as xgb

    import tasks

    client = MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    # Created here so the model lands in the run's experiment: `log_model` alone files it
    # under the active experiment, which is "Default" in a flow.
    model = client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The signature below is explicit: MLflow's hints about type-hinted predict methods
        # do not apply.
        warnings.filterwarnings("ignore", message=".*[Tt]ype hint")
        card_path = Path(tmp) / "card.json"
        card_path.write_text(card.to_json())
        artifacts = {"booster": booster_path, "card": str(card_path)}
        import json

        for key, summary in (("reference", reference), ("inputs", inputs)):
            if summary:
                path = Path(tmp) / f"{key}.json"
                path.write_text(json.dumps(summary))
                artifacts[key] = str(path)
        info = mlflow.pyfunc.log_model(
            name="model",
            # Models from code: MLflow runs this file at load time instead of unpickling.
            python_model=str(Path(tasks.__file__).parent / "mlflow_model.py"),
            artifacts=artifacts,
            code_paths=[str(Path(tasks.__file__).parent)],
            signature=model_signature(card),
            input_example=input_example,
            metadata=metadata,
            model_id=model.model_id,
            pip_requirements=[
                f"xgboost=={xgb.__version__}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
                f"pydantic=={pydantic.__version__}",
            ],
        )
    # The run page lists a run's models from its outputs: `log_model` links them only for an
    # active (fluent) run, which a flow does not have.
    client.log_outputs(run_id, models=[LoggedModelOutput(model.model_id, step=0)])
    return LoggedModel(uri=info.model_uri, model_id=model.model_id)


def register_model(model_uri: str, name: str) -> str:
    """A new version of registered model `name` from a logged model; returns the version."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        version = mlflow.register_model(model_uri, name)
    return str(version.version)


# --------------------------------------------------------------------------------------------
# The registry: aliases, version tags and a promotion history per registered model

HISTORY_TAG = "glassbox.history."


def alias_version(name: str, alias: str) -> str | None:
    """The version `models:/<name>@<alias>` points at, or None (no such alias or model)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, alias, version)


def set_version_tags(name: str, version: str, tags: Mapping[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def append_history(name: str, event: Mapping[str, Any]) -> None:
    """One more entry in the model's promotion history: a registered-model tag per event
    (`glassbox.history.00007`), so the history outlives versions and aliases (MLflow keeps no
    alias history by itself). Callers hold the promotion lock, so numbering is race-free."""
    import json
    from datetime import UTC, datetime

    client = MlflowClient()
    tags = client.get_registered_model(name).tags
    number = 1 + max(
        (int(k.removeprefix(HISTORY_TAG)) for k in tags if k.startswith(HISTORY_TAG)), default=0
    )
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **event}
    text = json.dumps(entry, default=str)
    if len(text) > 4900:  # a tag's value holds 5,000 characters
        entry["reasons"] = [r[:200] for r in entry.get("reasons", [])][:10]
        text = json.dumps(entry, default=str)[:4900]
    client.set_registered_model_tag(name, f"{HISTORY_TAG}{number:05d}", text)


def history(name: str) -> list[dict[str, Any]]:
    """The model's promotion history, oldest first."""
    import json

    tags = MlflowClient().get_registered_model(name).tags
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(HISTORY_TAG))]


@dataclass(frozen=True)
class VersionInfo:
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created: int
    metrics: dict[str, float]


def model_versions(name: str) -> list[VersionInfo]:
    """Every version of a registered model, newest first, with its aliases, tags and its
    training run's test metrics."""
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    # Version search results carry no aliases on every store; the model holds them all.
    by_version: dict[str, list[str]] = {}
    for alias, number in client.get_registered_model(name).aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    out = []
    for v in sorted(versions, key=lambda v: -int(v.version)):
        metrics: dict[str, float] = {}
        if v.run_id:
            with suppress(MlflowException):
                metrics = dict(client.get_run(v.run_id).data.metrics)
        out.append(
            VersionInfo(
                str(v.version),
                v.run_id,
                tuple(sorted(by_version.get(str(v.version), []))),
                dict(v.tags),
                v.creation_timestamp,
                metrics,
            )
        )
    return out


def registered_models() -> list[str]:
    return sorted(m.name for m in MlflowClient().search_registered_models())


def model_exists(name: str, version: str | None = None) -> bool:
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        if version is None:
            client.get_registered_model(name)
        else:
            client.get_model_version(name, version)
    except MlflowException:
        return False
    return True


@dataclass
class LoadedModel:
    """A registered model as MLflow loads it (`pyfunc`), with what Glassbox keeps inside it."""

    uri: str
    version: str
    run_id: str | None
    pyfunc: Any
    card: Any  # tasks.serving.ModelCard
    booster: Any
    reference: dict[str, Any] | None  # the drift check's summary of its training data
    inputs: dict[str, Any] | None = None  # the raw inputs as training saw them


def load_registered(name: str, version: str) -> LoadedModel:
    """`models:/<name>/<version>` through the registry, as a server would load it."""
    uri = f"models:/{name}/{version}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = mlflow.pyfunc.load_model(uri)
    inner = model.unwrap_python_model()
    run_id = MlflowClient().get_model_version(name, version).run_id
    return LoadedModel(
        uri,
        version,
        run_id,
        model,
        inner.card,
        inner.booster,
        getattr(inner, "reference", None),
        getattr(inner, "inputs", None),
    )


@dataclass(frozen=True)
class ModelRef:
    """Which model a user asked for, resolved: where MLflow loads it from, its registry entry
    (if any) and the run that trained it."""

    uri: str
    name: str | None
    version: str | None
    run_id: str | None
    aliases: tuple[str, ...] = ()
    note: str = ""  # said on the page: e.g. the champion was asked for and there is none


def resolve_model(asked: str | None, default_name: str) -> ModelRef:
    """`models:/<name>@<alias>`, `models:/<name>/<version>`, an MLflow run id, or (None) the
    champion of `default_name`, else its latest version (with a note saying so).

    Raises:
        ConfigError: naming what is not there (model, alias, version or run).
    """
    from mlflow.exceptions import MlflowException

    from tasks.config import ConfigError

    client = MlflowClient()
    where = mlflow.get_tracking_uri()
    note = ""
    if asked and not asked.startswith("models:/"):
        try:
            run = client.get_run(asked)
        except MlflowException:
            raise ConfigError(
                f"model: '{asked}' is neither a models:/ URI nor a run id in {where}"
            ) from None
        versions = client.search_model_versions(f"run_id = '{asked}'")
        if versions:
            v = max(versions, key=lambda v: int(v.version))
            return _version_ref(v.name, str(v.version), note)
        outputs = run.outputs.model_outputs if run.outputs else []
        if not outputs:
            raise ConfigError(f"model: run {asked} logged no model")
        return ModelRef(f"models:/{outputs[-1].model_id}", None, None, asked)
    if asked is None:
        name, alias = default_name, "champion"
    else:
        body = asked.removeprefix("models:/")
        name, _, rest = body.partition("@") if "@" in body else (body, "", "")
        if "@" in body:
            alias = rest
        else:
            name, _, version = body.rpartition("/")
            if not name or not version.isdigit():
                raise ConfigError(
                    f"model: '{asked}' is not models:/<name>@<alias> or models:/<name>/<version>"
                )
            if not model_exists(name, version):
                raise ConfigError(f"model: {name} has no version {version} in {where}")
            return _version_ref(name, version, note)
    if not model_exists(name):
        known = ", ".join(registered_models()) or "none yet; run `glassbox train`"
        raise ConfigError(f"model: no registered model '{name}' in {where} (models: {known})")
    found = alias_version(name, alias)
    if found is None:
        if asked is not None:
            raise ConfigError(f"model: {name} has no alias @{alias}")
        latest = model_versions(name)
        if not latest:
            raise ConfigError(f"model: {name} has no versions")
        found = latest[0].version
        note = f"{name} has no @champion yet: this is its latest version, {found}."
    return _version_ref(name, found, note)


def _version_ref(name: str, version: str, note: str) -> ModelRef:
    client = MlflowClient()
    v = client.get_model_version(name, version)
    aliases = tuple(
        sorted(a for a, n in client.get_registered_model(name).aliases.items() if str(n) == version)
    )
    return ModelRef(f"models:/{name}/{version}", name, version, v.run_id, aliases, note)


def load_pyfunc(uri: str) -> Any:
    """The Glassbox model behind a models:/ URI, as MLflow loads it (its `GlassboxModel`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.pyfunc.load_model(uri).unwrap_python_model()


def run_summary(run_id: str) -> dict[str, Any]:
    """A run's name, experiment, metrics and params, for a model card."""
    run = MlflowClient().get_run(run_id)
    return {
        "name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "metrics": dict(run.data.metrics),
        "params": dict(run.data.params),
    }


def run_artifact(run_id: str, artifact_path: str, dst: str | Path) -> Path | None:
    """One artifact of a run downloaded into `dst`, or None when the run has no such file."""
    import os

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
            )
        )
    except (MlflowException, OSError):
        return None


def run_link(run_id: str, ui_url: str | None) -> str | None:
    """The MLflow UI page of a run, when a UI address is known."""
    if not ui_url:
        return None
    exp = MlflowClient().get_run(run_id).info.experiment_id
    return f"{ui_url.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"
