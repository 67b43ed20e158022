"""Data stage: load a data set, validate and encode it, split it into train/valid/test.

Pure functions first; the Prefect tasks at the bottom write the results as Parquet files into the
run's workspace (stages exchange files, not pickled frames) and log through `tasks.tracking`.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sklearn.model_selection import train_test_split

from tasks import tracking
from tasks.config import ConfigError, DataConfig, SplitConfig, TaskType

ROW_ID = "row_id"
SPLITS = ("train", "valid", "test")
FRAUD_ROWS = 284_807
FRAUD_POSITIVE_RATE = 492 / 284_807
_SKLEARN_BUILTINS = {
    "breast_cancer": "load_breast_cancer",
    "wine": "load_wine",
    "iris": "load_iris",
    "digits": "load_digits",
    "diabetes": "load_diabetes",
}
BUILTINS = (*_SKLEARN_BUILTINS, "fraud")
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
    n_rows: int = 0

    def feature_dtypes(self) -> dict[str, pd.CategoricalDtype]:
        """The categorical dtypes that every split must share (XGBoost uses the codes)."""
        return {c: pd.CategoricalDtype(cats) for c, cats in self.categories.items()}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# --------------------------------------------------------------------------------------------
# Loading


def make_fraud(
    n_rows: int = FRAUD_ROWS, *, positive_rate: float = FRAUD_POSITIVE_RATE, seed: int = 0
) -> pd.DataFrame:
    """A synthetic data set shaped like the public credit-card-fraud data.

    Columns `Time, V1..V28, Amount, Class`: `Time` in seconds over two days with fewer
    transactions at night, `V1..V28` PCA-like components with decreasing variance, `Amount`
    log-normal, `Class` 1 for fraud (about 0.17% of rows). Frauds are shifted along a handful of
    components by a random strength, so some are easy to catch and some look legitimate.
    """
    rng = np.random.default_rng(seed)
    n_pos = max(2, round(n_rows * positive_rate))
    y = np.zeros(n_rows, dtype=np.int64)
    pos = rng.choice(n_rows, n_pos, replace=False)
    y[pos] = 1

    # Diurnal traffic: accept uniform times with a probability that dips at night.
    draws = rng.uniform(0, 172_792, 3 * n_rows)
    keep = rng.uniform(size=draws.size) < 0.55 + 0.45 * np.sin(2 * np.pi * (draws / 86_400 - 0.3))
    times = np.sort(draws[keep][:n_rows])
    rng.shuffle(times[pos])  # frauds happen at any hour

    std = np.linspace(1.95, 0.33, 28)
    v = rng.standard_normal((n_rows, 28)) * std
    shift = np.zeros(28)
    shift[[13, 11, 9, 16, 2, 15, 6]] = [-4.5, -3.5, -3.0, -3.0, -2.5, -2.0, -1.5]
    shift[[3, 10, 1]] = [2.5, 2.0, 1.5]
    strength = rng.uniform(0.15, 1.3, n_pos)
    v[pos] += strength[:, None] * shift * std + rng.normal(0, 0.5, (n_pos, 28)) * std

    amount = np.round(np.exp(rng.normal(3.0, 1.4, n_rows)), 2)
    small = rng.uniform(size=n_pos) < 0.4
    amount[pos] = np.where(small, 1.0, np.round(np.exp(rng.normal(3.6, 1.8, n_pos)), 2))

    frame = pd.DataFrame(v, columns=[f"V{i}" for i in range(1, 29)])
    frame.insert(0, "Time", np.round(times))
    frame["Amount"] = amount
    frame["Class"] = y
    return frame


def dataset_name(source: str) -> str:
    """`builtin:fraud` -> `fraud`; `/data/penguins.csv` -> `penguins`."""
    return source.removeprefix("builtin:") if source.startswith("builtin:") else Path(source).stem


def load_source(
    source: str, *, rows: int | None = None, seed: int = 0
) -> tuple[pd.DataFrame, str | None, str]:
    """Load `builtin:<name>`, a .csv or a .parquet file.

    Returns:
        The frame, the data set's own target column (built-ins) or None, and the data set name.
    """
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name not in BUILTINS:
            raise ConfigError(
                f"data.source: unknown built-in data set '{name}'; available: {', '.join(BUILTINS)}"
            )
        if rows is not None and name != "fraud":
            raise ConfigError("data.rows only applies to generated data sets (builtin:fraud)")
        if name == "fraud":
            return make_fraud(rows or FRAUD_ROWS, seed=seed), "Class", name
        return (*_load_sklearn(name), name)
    if rows is not None:
        raise ConfigError("data.rows only applies to generated data sets (builtin:fraud)")
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.source: file not found: {source}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        _check_csv_header(path)
        return pd.read_csv(path), None, path.stem
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path), None, path.stem
    raise ConfigError(f"data.source: '{source}' is not a .csv or .parquet file")


def _load_sklearn(name: str) -> tuple[pd.DataFrame, str]:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, _SKLEARN_BUILTINS[name])(as_frame=True)
    frame = bunch.frame
    if name != "diabetes":
        # Keep sklearn's class order and give the classes their names.
        frame["target"] = pd.Categorical.from_codes(frame["target"], list(bunch.target_names))
    return frame, "target"


def _check_csv_header(path: Path) -> None:
    # pandas silently renames a repeated header ("x" -> "x.1"), so look before it does.
    with path.open(newline="") as fh:
        header = next(csv.reader(fh), [])
    dupes = [c for c, n in Counter(header).items() if n > 1]
    if dupes:
        raise ConfigError(f"data.source: duplicate column names in {path.name}: {', '.join(dupes)}")


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
        raise ConfigError(f"data.target is required for {cfg.source}; columns: {', '.join(columns)}")
    for key, col in [("data.target", target), ("data.id_column", cfg.id_column)]:
        if col is not None and col not in frame.columns:
            raise ConfigError(f"{key}: {_not_a_column(col, columns)}")
    unknown = [c for c in cfg.drop if c not in frame.columns]
    if unknown:
        raise ConfigError(f"data.drop: {_not_a_column(unknown[0], columns)}")
    if len(frame) == 0:
        raise ConfigError(f"data: {cfg.source} is empty (0 rows)")

    frame = frame.set_index(cfg.id_column) if cfg.id_column else frame.reset_index(drop=True)
    if cfg.id_column and not frame.index.is_unique:
        raise ConfigError(f"data.id_column: '{cfg.id_column}' has repeated values")
    frame.index.name = ROW_ID
    features = [c for c in frame.columns if c != target and c not in cfg.drop]
    if not features:
        raise ConfigError("data: no feature columns left after removing the target and data.drop")

    y_raw = frame[target]
    _check_target_values(y_raw, target)
    task = detect_task(y_raw) if cfg.task == "auto" else cfg.task
    y, classes = encode_target(y_raw, task, target=target, positive_class=cfg.positive_class)
    x, categories = encode_features(frame[features])
    data = x.assign(**{target: y})
    info = DatasetInfo(
        name=name,
        source=cfg.source,
        target=target,
        task=task,
        features=features,
        categories=categories,
        classes=classes,
        n_rows=len(data),
    )
    return data, info


def _not_a_column(col: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(col, columns, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    shown = ", ".join(columns[:40]) + (", ..." if len(columns) > 40 else "")
    return f"'{col}' is not a column{hint} (columns: {shown})"


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
    labels = list(y.cat.remove_unused_categories().cat.categories) if isinstance(
        y.dtype, pd.CategoricalDtype
    ) else sorted(y.unique().tolist())
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


def encode_features(x: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Strings and categoricals become categoricals with fixed categories; numbers stay.

    Raises:
        ConfigError: for datetime or other unusable columns, infinite values, or names XGBoost
            refuses (`[`, `]`, `<`).
    """
    bad_names = [c for c in x.columns if any(ch in str(c) for ch in "[]<")]
    if bad_names:
        raise ConfigError(
            f"data: XGBoost does not accept '[', ']' or '<' in feature names: {', '.join(bad_names)}"
        )
    out: dict[str, pd.Series] = {}
    categories: dict[str, list[str]] = {}
    for col in x.columns:
        s = x[col]
        if pd.api.types.is_bool_dtype(s) or (
            pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype)
        ):
            if pd.api.types.is_complex_dtype(s):
                raise ConfigError(f"data: column '{col}' holds complex numbers")
            if not pd.api.types.is_bool_dtype(s) and np.isinf(s.to_numpy(dtype=float, na_value=np.nan)).any():
                raise ConfigError(f"data: feature '{col}' has infinite values; replace them first")
            # XGBoost computes in float32 anyway; floats let a served model take missing values.
            out[col] = s.astype("float64") if pd.api.types.is_integer_dtype(s) else s
        elif pd.api.types.is_string_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
            text = s.astype("string") if not isinstance(s.dtype, pd.CategoricalDtype) else s
            cats = sorted(str(v) for v in text.dropna().unique())
            out[col] = pd.Series(
                pd.Categorical(text.astype("string"), categories=cats), index=s.index
            )
            categories[col] = cats
        else:
            raise ConfigError(
                f"data: feature '{col}' has type {s.dtype}, which XGBoost cannot use; "
                "convert it to numbers or list it in data.drop"
            )
    return pd.DataFrame(out, index=x.index), categories


def split_frame(
    data: pd.DataFrame, info: DatasetInfo, cfg: SplitConfig
) -> dict[str, pd.DataFrame]:
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


def read_split(path: str | Path, info: DatasetInfo) -> tuple[pd.DataFrame, pd.Series]:
    """Features and target of one split file, with the shared categorical dtypes."""
    frame = pd.read_parquet(path).astype(info.feature_dtypes())
    return frame[info.features], frame[info.target]


# --------------------------------------------------------------------------------------------
# Prefect tasks


@task(name="load-data", cache_policy=NO_CACHE)
def load_data(cfg: DataConfig, workspace: str, run_id: str) -> DatasetInfo:
    """Load, validate and encode the data set; write `data.parquet` into the workspace."""
    frame, default_target, name = load_source(cfg.source, rows=cfg.rows, seed=cfg.seed)
    data, info = prepare(frame, cfg, default_target=default_target, name=name)
    data.to_parquet(Path(workspace) / "data.parquet")
    tracking.log_dataset(run_id, data, name=name, source=cfg.source, target=info.target)
    tracking.log_text(run_id, info.to_json(), "data/dataset_info.json")
    tracking.log_params(run_id, {"data.task_resolved": info.task, "data.rows_loaded": info.n_rows})
    get_run_logger().info(
        "Loaded %s: %d rows, %d features, task %s%s", name, info.n_rows, len(info.features),
        info.task, f", classes {info.classes}" if info.classes else "",
    )
    return info


@task(name="split-data", cache_policy=NO_CACHE)
def split_data(info: DatasetInfo, cfg: SplitConfig, workspace: str, run_id: str) -> dict[str, str]:
    """Split `data.parquet` into train/valid/test Parquet files; log their class balance."""
    parts = split_frame(pd.read_parquet(Path(workspace) / "data.parquet"), info, cfg)
    paths = {}
    for split, part in parts.items():
        paths[split] = str(Path(workspace) / f"{split}.parquet")
        part.to_parquet(paths[split])
    tracking.log_metrics(run_id, split_summary(parts, info))
    return paths
