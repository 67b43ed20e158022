"""Built-in data sets and file loading: pure functions, no Prefect or MLflow.

Kept apart from the data stage's tasks so that scripts (the benchmarks' plain baseline) can use
the same data without importing the orchestration stack.
"""

from __future__ import annotations

import csv
import difflib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import ConfigError, DataConfig, InjectConfig

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


def make_fraud(
    n_rows: int = FRAUD_ROWS,
    *,
    positive_rate: float = FRAUD_POSITIVE_RATE,
    seed: int | list[int] = 0,
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


def batch_seed(seed: int, batch: int | str) -> int | list[int]:
    """The generator's seed of batch `batch` (0: the data set itself; `date`: today's, UTC)."""
    if batch == "date":
        batch = datetime.now(UTC).date().toordinal()
    return seed if batch == 0 else [seed, int(batch)]


def inject_drift(frame: pd.DataFrame, cfg: InjectConfig) -> pd.DataFrame:
    """The frame with `cfg.shift` (in standard deviations) and `cfg.scale` (of the spread,
    around the mean) applied to numeric columns.

    Raises:
        ConfigError: a column that is missing or not numeric.
    """
    if not cfg.shift and not cfg.scale:
        return frame
    out = frame.copy()
    for key, changes in (("shift", cfg.shift), ("scale", cfg.scale)):
        for column, amount in changes.items():
            if column not in out.columns:
                raise ConfigError(f"data.inject.{key}: {not_a_column(column, list(out.columns))}")
            if not pd.api.types.is_numeric_dtype(out[column]):
                raise ConfigError(f"data.inject.{key}: column '{column}' is not numeric")
            values = out[column].astype("float64")
            if key == "shift":
                out[column] = values + amount * float(values.std())
            else:
                out[column] = values.mean() + (values - values.mean()) * amount
    return out


def check_source(cfg: DataConfig) -> None:
    """What can be checked without reading the data, in milliseconds: the source exists, is
    readable and has the format its name says, and its header holds the target, the id column
    and every column the config names.

    Raises:
        ConfigError: one line naming the problem.
    """
    if cfg.source.startswith("builtin:"):
        name = _builtin_name(cfg.source, cfg.rows)
        if name != "fraud" and (cfg.batch != 0 or cfg.inject.positive_rate is not None):
            raise ConfigError(
                "data.batch and data.inject.positive_rate apply to generated data (builtin:fraud)"
            )
        _check_named_columns(cfg, _builtin_columns(name))
        return
    if cfg.batch != 0 or cfg.inject.positive_rate is not None:
        raise ConfigError(
            "data.batch and data.inject.positive_rate apply to generated data (builtin:fraud); "
            f"{cfg.source} is read as it is now"
        )
    if cfg.rows is not None:
        raise ConfigError("data.rows only applies to generated data sets (builtin:fraud)")
    path = Path(cfg.source).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.source: file not found: {cfg.source}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header = _check_csv_shape(path, cfg.encoding, rows=False)
    elif suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            header = list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(
                f"data.source: {path.name} is not a readable Parquet file ({exc})"
            ) from None
    else:
        raise ConfigError(f"data.source: '{cfg.source}' is not a .csv or .parquet file")
    if cfg.target is None:
        raise ConfigError(
            f"data.target is required for {cfg.source}; columns: {', '.join(header[:40])}"
        )
    _check_named_columns(cfg, header)


def _check_named_columns(cfg: DataConfig, header: list[str]) -> None:
    """Every column the config names is in the data's header."""
    named = [("data.target", cfg.target), ("data.id_column", cfg.id_column)]
    named += [("data.drop", c) for c in cfg.drop] + [("data.columns", c) for c in cfg.columns]
    named += [("data.inject.shift", c) for c in cfg.inject.shift]
    named += [("data.inject.scale", c) for c in cfg.inject.scale]
    for key, column in named:
        if column is not None and column not in header:
            raise ConfigError(f"{key}: {not_a_column(column, header)}")


def not_a_column(col: str, columns: list[str]) -> str:
    """`'x' is not a column; did you mean 'y'? (columns: ...)`."""
    close = difflib.get_close_matches(col, columns, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    shown = ", ".join(columns[:40]) + (", ..." if len(columns) > 40 else "")
    return f"'{col}' is not a column{hint} (columns: {shown})"


def _builtin_name(source: str, rows: int | None) -> str:
    name = source.removeprefix("builtin:")
    if name not in BUILTINS:
        raise ConfigError(
            f"data.source: unknown built-in data set '{name}'; available: {', '.join(BUILTINS)}"
        )
    if rows is not None and name != "fraud":
        raise ConfigError("data.rows only applies to generated data sets (builtin:fraud)")
    return name


def dataset_name(source: str) -> str:
    """`builtin:fraud` -> `fraud`; `/data/penguins.csv` -> `penguins`."""
    return source.removeprefix("builtin:") if source.startswith("builtin:") else Path(source).stem


def load_source(
    source: str,
    *,
    rows: int | None = None,
    seed: int | list[int] = 0,
    encoding: str = "utf-8",
    positive_rate: float | None = None,
) -> tuple[pd.DataFrame, str | None, str]:
    """Load `builtin:<name>`, a .csv or a .parquet file (generated data: `seed` and
    `positive_rate` draw the batch).

    Returns:
        The frame, the data set's own target column (built-ins) or None, and the data set name.
    """
    if source.startswith("builtin:"):
        name = _builtin_name(source, rows)
        if name == "fraud":
            rate = positive_rate or FRAUD_POSITIVE_RATE
            return make_fraud(rows or FRAUD_ROWS, positive_rate=rate, seed=seed), "Class", name
        return (*_load_sklearn(name), name)
    if rows is not None:
        raise ConfigError("data.rows only applies to generated data sets (builtin:fraud)")
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.source: file not found: {source}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, encoding), None, path.stem
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path), None, path.stem
    raise ConfigError(f"data.source: '{source}' is not a .csv or .parquet file")


def _builtin_columns(name: str) -> list[str]:
    """A built-in data set's columns without generating or loading all of it (sklearn's files
    are small and local)."""
    if name == "fraud":
        return ["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class"]
    return [str(c) for c in _load_sklearn(name)[0].columns]


def _load_sklearn(name: str) -> tuple[pd.DataFrame, str]:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, _SKLEARN_BUILTINS[name])(as_frame=True)
    frame = bunch.frame
    if name != "diabetes":
        # Keep sklearn's class order and give the classes their names.
        frame["target"] = pd.Categorical.from_codes(frame["target"], list(bunch.target_names))
    return frame, "target"


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    """A CSV file read strictly: pandas shifts every column when the first row has one field
    more than the header, and fills a short row with NaN without a word. pandas reads; the
    exact scan (`_check_csv_shape`, ~3x pandas' time) runs only where pandas objected or a
    short row is possible (the last column has gaps)."""
    import warnings

    _check_csv_shape(path, encoding, rows=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, encoding=encoding, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as exc:
        _check_csv_shape(path, encoding)
        raise ConfigError(f"data.source: {path.name}: {str(exc).splitlines()[0]}") from None
    if frame.shape[1] and frame.iloc[:, -1].isna().any():
        _check_csv_shape(path, encoding)
    return frame


def _check_csv_shape(path: Path, encoding: str, *, rows: bool = True) -> list[str]:
    """A header, no repeated names (pandas renames them `x.1`), text that decodes, and (`rows`)
    every row as many fields as the header.

    Raises:
        ConfigError: one line naming the file and the problem (the line number and the field
            counts for a ragged row; the byte and `data.encoding` for an encoding error).
    """
    try:
        with path.open(newline="", encoding=encoding) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise ConfigError(f"data.source: {path.name} is empty (no header line)")
            dupes = [c for c, n in Counter(header).items() if n > 1]
            if dupes:
                raise ConfigError(
                    f"data.source: duplicate column names in {path.name}: {', '.join(dupes)}"
                )
            for fields in reader if rows else ():
                if fields and len(fields) != len(header):
                    raise ConfigError(
                        f"data.source: {path.name} line {reader.line_num} has {len(fields)} "
                        f"fields, the header has {len(header)}"
                    )
        return header
    except UnicodeDecodeError:
        line, byte = _undecodable(path, encoding)
        raise ConfigError(
            f"data.source: {path.name} line {line} is not {encoding} text (byte 0x{byte:02x}); "
            "set data.encoding, e.g. --set data.encoding=latin-1"
        ) from None
    except LookupError:
        raise ConfigError(f"data.encoding: unknown encoding '{encoding}'") from None
    except OSError as exc:
        raise ConfigError(f"data.source: cannot read {path}: {exc.strerror or exc}") from None


def _undecodable(path: Path, encoding: str) -> tuple[int, int]:
    """The first line (1-based) and byte that do not decode (the text reader decodes ahead in
    chunks, so its error does not say where)."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as exc:
                return number, raw[exc.start]
    return 0, 0
