"""Files of a run: tables, texts, figures, bytes and batches of them, and the data set it used."""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
