"""Data stage: load a data set, validate and encode it, split it into train/valid/test.

Pure functions first; the Prefect tasks at the bottom write the results as Parquet files into the
run's workspace (stages exchange files, not pickled frames) and log through `tasks.tracking`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sklearn.model_selection import train_test_split

from tasks import tracking
from tasks.config import ConfigError, DataConfig, SplitConfig, TaskType
from tasks.datasets import batch_seed, inject_drift, load_source, not_a_column
from tasks.preprocess import (
    ColumnProfile,
    Spec,
    clean_target,
    describe_inputs,
    profile_columns,
    transform,
)
from tasks.row_picking import check_requested

ROW_ID = "row_id"
SPLITS = ("train", "valid", "test")
EXAMPLE_FILE = "raw_example.parquet"
TEST_ROWS = "data/test_rows.parquet"  # raw test rows kept with the run (`glassbox app`)
# Integer targets with at most this many distinct values are taken as classes under task=auto.
MAX_AUTO_CLASSES = 20


@dataclass(frozen=True)
class DatasetInfo:
    """What later stages need to know about the data, small enough to pass between tasks."""

    name: str
    source: str
    target: str
    task: TaskType
    features: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    # The classes as the target holds them (ints stay ints): what the served model returns.
    label_values: list[Any] = field(default_factory=list)
    n_rows: int = 0
    # How raw columns become `features` (logged with the model), and what the profile saw.
    spec: Spec = field(default_factory=lambda: Spec(()))
    profile: list[ColumnProfile] = field(default_factory=list)

    def feature_dtypes(self) -> dict[str, pd.CategoricalDtype]:
        """The categorical dtypes that every split must share (XGBoost uses the codes)."""
        return {c: pd.CategoricalDtype(cats) for c, cats in self.categories.items()}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# --------------------------------------------------------------------------------------------
# Validation and encoding


def prepare(
    frame: pd.DataFrame, cfg: DataConfig, *, default_target: str | None, name: str
) -> tuple[pd.DataFrame, DatasetInfo]:
    """Validate a raw frame and encode it for XGBoost.

    The result has the row ids as index (`row_id`), the features (strings become pandas
    categoricals with fixed categories), and the target (class codes 0..K-1, or floats).

    Raises:
        ConfigError: naming the problem: duplicate or missing columns, an empty frame, NaN or
            inf in the target, a single class, unusable feature types.
    """
    columns = [str(c) for c in frame.columns]
    dupes = [c for c, n in Counter(columns).items() if n > 1]
    if dupes:
        raise ConfigError(f"data: duplicate column names: {', '.join(dupes)}")
    target = cfg.target or default_target
    if target is None:
        raise ConfigError(
            f"data.target is required for {cfg.source}; columns: {', '.join(columns)}"
        )
    for key, col in [("data.target", target), ("data.id_column", cfg.id_column)]:
        if col is not None and col not in frame.columns:
            raise ConfigError(f"{key}: {not_a_column(col, columns)}")
    unknown = [c for c in cfg.drop if c not in frame.columns]
    if unknown:
        raise ConfigError(f"data.drop: {not_a_column(unknown[0], columns)}")
    if len(frame) == 0:
        raise ConfigError(f"data: {cfg.source} is empty (0 rows)")

    frame = frame.set_index(cfg.id_column) if cfg.id_column else frame.reset_index(drop=True)
    if cfg.id_column and not frame.index.is_unique:
        raise ConfigError(f"data.id_column: '{cfg.id_column}' has repeated values")
    frame.index.name = ROW_ID
    features = [c for c in frame.columns if c != target and c not in cfg.drop]
    if not features:
        raise ConfigError("data: no feature columns left after removing the target and data.drop")

    y_raw = clean_target(frame[target], cfg.missing_values)
    _check_target_values(y_raw, target)
    task = detect_task(y_raw) if cfg.task == "auto" else cfg.task
    y, classes = encode_target(y_raw, task, target=target, positive_class=cfg.positive_class)
    as_held = {str(v): v.item() if hasattr(v, "item") else v for v in y_raw.dropna().unique()}
    spec, profile = profile_columns(
        frame[features],
        cfg.columns,
        missing_tokens=cfg.missing_values,
        max_unique_share=cfg.max_unique_share,
    )
    if not spec.columns:
        reasons = "; ".join(f"{p.column}: {p.reason}" for p in profile)
        raise ConfigError(f"data: every feature column was left out ({reasons})")
    data = transform(frame, spec).assign(**{target: y})
    info = DatasetInfo(
        name=name,
        source=cfg.source,
        target=target,
        task=task,
        features=spec.features,
        categories=spec.categories,
        classes=classes,
        label_values=[as_held[name] for name in classes],
        n_rows=len(data),
        spec=spec,
        profile=profile,
    )
    return data, info


def _check_target_values(y: pd.Series, target: str) -> None:
    bad = y.isna()
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
        bad |= np.isinf(y.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        rows = ", ".join(map(str, y.index[bad][:5]))
        raise ConfigError(
            f"data.target '{target}' has {int(bad.sum())} missing or infinite values "
            f"(rows {rows}{', ...' if bad.sum() > 5 else ''}); drop or fill them first"
        )


def detect_task(y: pd.Series) -> TaskType:
    """Binary, multiclass or regression from the target's values.

    Strings, booleans and categoricals are classes; numbers are classes when they are
    whole numbers with at most `MAX_AUTO_CLASSES` distinct values, else a regression target.
    """
    n_unique = y.nunique()
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "binary" if n_unique <= 2 else "multiclass"
    values = y.to_numpy(dtype=float)
    if n_unique <= 2:
        return "binary"
    if n_unique <= MAX_AUTO_CLASSES and np.all(values == np.round(values)):
        return "multiclass"
    return "regression"


def encode_target(
    y: pd.Series, task: TaskType, *, target: str, positive_class: str | None = None
) -> tuple[pd.Series, list[str]]:
    """Class codes 0..K-1 and the class names in code order, or float values for regression.

    Class order: a categorical's own order, else sorted values. For binary data,
    `positive_class` (compared as text) is moved to code 1.
    """
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise ConfigError(
                f"data.task is regression but target '{target}' is not numeric ({y.dtype})"
            )
        return y.astype("float64"), []
    if positive_class is not None and task != "binary":
        raise ConfigError("data.positive_class only applies to binary targets")
    labels = (
        list(y.cat.remove_unused_categories().cat.categories)
        if isinstance(y.dtype, pd.CategoricalDtype)
        else sorted(y.unique().tolist())
    )
    names = [str(v) for v in labels]
    if len(names) < 2:
        raise ConfigError(
            f"data.target '{target}' has one class only ({names[0]}): nothing to classify"
        )
    if task == "binary" and len(names) != 2:
        raise ConfigError(f"data.task is binary but target '{target}' has {len(names)} classes")
    if positive_class is not None:
        if positive_class not in names:
            raise ConfigError(
                f"data.positive_class '{positive_class}' is not a label of '{target}' "
                f"(labels: {', '.join(names)})"
            )
        if names[1] != positive_class:
            labels.reverse()
            names.reverse()
    codes = pd.Series(pd.Categorical(y, categories=labels).codes, index=y.index, name=y.name)
    return codes.astype("int32"), names


def split_frame(data: pd.DataFrame, info: DatasetInfo, cfg: SplitConfig) -> dict[str, pd.DataFrame]:
    """Seeded train/valid/test split, stratified on the target for classification."""
    y = data[info.target]
    stratify = info.task != "regression"
    if stratify:
        counts = y.value_counts()
        if counts.min() < 3:
            rare = info.classes[int(counts.idxmin())]
            raise ConfigError(
                f"data: class '{rare}' has {int(counts.min())} row(s); a stratified "
                "train/valid/test split needs at least 3 per class"
            )
    n_test = max(round(len(data) * cfg.test), y.nunique() if stratify else 1)
    n_valid = max(round(len(data) * cfg.valid), y.nunique() if stratify else 1)
    if len(data) - n_test - n_valid < 2:
        raise ConfigError(f"data: {len(data)} rows are too few to split into train/valid/test")
    rest, test = train_test_split(
        data, test_size=n_test, random_state=cfg.seed, stratify=y if stratify else None
    )
    train, valid = train_test_split(
        rest,
        test_size=n_valid,
        random_state=cfg.seed,
        stratify=rest[info.target] if stratify else None,
    )
    return {"train": train, "valid": valid, "test": test}


def kept_test_rows(
    rows: pd.DataFrame, target: pd.Series, *, cap: int, seed: int, classes: bool
) -> pd.DataFrame:
    """The raw test rows (and their target, as the user knows it) kept with the run so that
    `glassbox app` can start from real rows: all of them when they fit in `cap`; otherwise every
    row of a class rarer than a tenth of `cap` (the frauds of a fraud data set), the rest a
    seeded sample. In the split's order; text columns as text (a column of mixed cells is one
    type in Parquet)."""
    kept = rows.assign(**{str(target.name): target})
    if len(kept) > cap:
        rng = np.random.default_rng(seed)
        whole = np.zeros(len(kept), dtype=bool)
        if classes:
            counts = target.value_counts()
            whole = target.isin(counts.index[counts <= cap / 10]).to_numpy().copy()
        rest = np.flatnonzero(~whole)
        room = max(cap - int(whole.sum()), 0)
        whole[rng.choice(rest, min(room, len(rest)), replace=False)] = True
        kept = kept[whole]
    text = [c for c in kept.columns if kept[c].dtype == object]
    return kept.astype({c: "string" for c in text})


def split_summary(parts: dict[str, pd.DataFrame], info: DatasetInfo) -> dict[str, float]:
    """Rows per split, and for classification each class's share of each split."""
    out: dict[str, float] = {}
    for split, part in parts.items():
        out[f"data_{split}_rows"] = float(len(part))
        if info.classes:
            shares = part[info.target].value_counts(normalize=True)
            for code, name in enumerate(info.classes):
                out[f"data_{split}_share_{tracking.safe_key(name)}"] = float(shares.get(code, 0.0))
    return out


def dask_split(path: str | Path, info: DatasetInfo) -> tuple[Any, Any]:
    """Features and target of one split file as Dask collections, read by the workers.

    `from_map(pd.read_parquet)` rather than `dd.read_parquet`: its first compute takes 0.2 s
    instead of 0.9 s, and workers unpickle nothing but pandas. The meta comes from the file's
    schema, so the client does not read the data.
    """
    import dask.dataframe as dd

    from tasks.storage import parquet_schema

    meta = parquet_schema(str(path)).empty_table().to_pandas().astype(info.feature_dtypes())
    frame = dd.from_map(pd.read_parquet, [str(path)], meta=meta, enforce_metadata=False)
    frame = frame.astype(info.feature_dtypes()) if info.categories else frame
    return frame[info.features], frame[info.target]


def preload(
    cluster: Any, splits: dict[str, str], info: DatasetInfo, names: tuple[str, ...]
) -> dict:
    """The named splits read into the workers' memory (into the one that will train, when one
    does: `tasks.cluster.one_trainer`), as persisted (features, target): reading starts now, in
    the background, and the collections stay there while the caller holds them."""
    from tasks.cluster import one_trainer

    trainer = one_trainer(cluster.client, cluster.device)
    where = {"workers": [trainer[0]]} if trainer else {}
    return {
        name: tuple(cluster.client.persist(list(dask_split(splits[name], info)), **where))
        for name in names
    }


# --------------------------------------------------------------------------------------------
# Prefect tasks


@dataclass(frozen=True)
class Loaded:
    """The data read, validated, encoded and split: everything checked before a cluster starts
    or an MLflow run exists."""

    data: pd.DataFrame
    info: DatasetInfo
    parts: dict[str, pd.DataFrame]
    example: pd.DataFrame  # a few raw rows as the user has them (the served model's example)
    # The test split's rows as read (by row id, target left out): what a served model is fed
    # when champion and challenger are scored on the same rows.
    test_rows: pd.DataFrame | None = None
    # The raw inputs as training saw them (`preprocess.describe_inputs`), kept with the model.
    inputs: dict[str, Any] = field(default_factory=dict)


@task(name="load-data", cache_policy=NO_CACHE)
def load_data(cfg: DataConfig, split: SplitConfig, row_ids: tuple[Any, ...] = ()) -> Loaded:
    """Read, validate, encode and split the data; check the rows asked for by id are in the
    test split. Nothing is written or logged: a bad input stops here and leaves no trace."""
    frame, default_target, name = load_source(
        cfg.source,
        rows=cfg.rows,
        seed=batch_seed(cfg.seed, cfg.batch),
        encoding=cfg.encoding,
        positive_rate=cfg.inject.positive_rate,
    )
    frame = inject_drift(frame, cfg.inject)
    data, info = prepare(frame, cfg, default_target=default_target, name=name)
    parts = split_frame(data, info, split)
    if row_ids:
        check_requested(row_ids, parts["test"].index)
    example = frame.loc[:, [c.name for c in info.spec.columns]].head(5)
    by_id = frame.set_index(cfg.id_column) if cfg.id_column else frame.reset_index(drop=True)
    test_rows = by_id.drop(columns=[info.target]).loc[parts["test"].index]
    inputs = describe_inputs(by_id.loc[parts["train"].index], info.spec)
    logger = get_run_logger()
    logger.info(
        "Loaded %s: %d rows, %d columns -> %d features, task %s%s",
        name,
        info.n_rows,
        len(info.profile),
        len(info.features),
        info.task,
        f", classes {info.classes}" if info.classes else "",
    )
    for line in profile_warnings(info.profile):
        logger.warning(line)
    return Loaded(data, info, parts, example, test_rows, inputs)


@task(name="write-splits", cache_policy=NO_CACHE)
def write_splits(loaded: Loaded, workspace: str, shared: str | None = None) -> dict[str, str]:
    """Write the splits as Parquet where the workers read them (`shared`, a folder or an
    fsspec URL; default the workspace) and the raw example into the workspace. Returns the
    splits' locations."""
    from tasks import storage

    paths = {}
    for split, part in loaded.parts.items():
        paths[split] = storage.join(shared or workspace, f"{split}.parquet")
        part.to_parquet(paths[split])
    loaded.example.to_parquet(Path(workspace) / EXAMPLE_FILE)
    return paths


@task(name="record-data", cache_policy=NO_CACHE)
def record_data(
    loaded: Loaded, workspace: str, run_id: str, keep_rows: int = 0, seed: int = 0
) -> None:
    """Log the data set, its description, the profile, each split's class balance and up to
    `keep_rows` raw test rows (`kept_test_rows`): while the model trains."""
    info = loaded.info
    if keep_rows and loaded.test_rows is not None:
        y = loaded.parts["test"][info.target]
        target = (
            pd.Series(np.asarray(info.classes, dtype=object)[y.to_numpy()], index=y.index)
            if info.classes
            else y
        ).rename(info.target)
        columns = [c.name for c in info.spec.columns]
        kept = kept_test_rows(
            loaded.test_rows[columns], target, cap=keep_rows, seed=seed, classes=bool(info.classes)
        )
        path = Path(workspace) / Path(TEST_ROWS).name
        kept.to_parquet(path)
        tracking.log_file(run_id, path, str(Path(TEST_ROWS).parent))
    tracking.log_dataset(
        run_id, loaded.data, name=info.name, source=info.source, target=info.target
    )
    tracking.log_text(run_id, info.to_json(), "data/dataset_info.json")
    if info.classes:
        mapping = {name: code for code, name in enumerate(info.classes)}
        tracking.log_text(run_id, json.dumps(mapping, indent=2), "data/label_mapping.json")
    tracking.log_table(run_id, profile_table(info.profile), "data/profile.json")
    tracking.log_params(
        run_id,
        {
            "data.task_resolved": info.task,
            "data.rows_loaded": info.n_rows,
            "data.features_used": len(info.features),
            "data.columns_dropped": sum(p.role == "dropped" for p in info.profile),
        },
    )
    tracking.log_metrics(run_id, split_summary(loaded.parts, info))


def profile_table(profile: list[ColumnProfile]) -> pd.DataFrame:
    """`data/profile.json`: one row per input column with what was decided and why."""
    table = pd.DataFrame([asdict(p) for p in profile])
    return table.assign(features=table["features"].map(", ".join)) if len(table) else table


def profile_warnings(profile: list[ColumnProfile]) -> list[str]:
    """One line per column that was changed or left out, for the Prefect log."""
    return [
        f"column '{p.column}' ({p.dtype}): "
        + (f"left out: {p.reason}" if p.role == "dropped" else f"{p.kind}: {p.reason}")
        for p in profile
        if p.changed
    ]
