"""Column profiling and the preprocessing spec: what each raw column becomes, decided once from
the training data, kept as data (`Spec`, logged inside the model) and applied by one function,
`transform`, in training, in the served model and in the explanations alike.

Pure: pandas and numpy only, so that it travels with the logged model.

Decisions a careful person would make, each overridable per column (`data.columns`):
- cells holding a missing-value token ("", "NA", "N/A", "?", "null", "-", ...) are missing;
- a text column that is numeric except for a few cells stays numeric (those cells become
  missing, and the profile counts them);
- ISO date and datetime strings, and datetime columns, become calendar numbers (year, month,
  day of year, day of week; hour when the times vary), never a categorical;
- a text column whose values are mostly unique (identifier-like) and an integer column that
  numbers the rows (every value distinct, consecutive) are left out, as is a constant column;
- other text columns are native XGBoost categoricals with the categories seen in training
  (unseen ones become missing).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tasks.config import MISSING_TOKENS, ConfigError

DATE_PARTS = ("year", "month", "day_of_year", "day_of_week")
# Share of a text column's non-missing cells that must parse for it to count as numbers or dates.
PARSE_SHARE = 0.95
# Identifier-like text needs at least this many distinct values (a 12-row file is no evidence).
MIN_ID_VALUES = 20
# Year first, so never ambiguous: 2014-03-01, 2014/03/01, with an optional time and offset.
_ISO_DATE = r"^\d{4}([-/])\d{2}\1\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
Kind = Literal["number", "category", "date"]
Choice = Literal["auto", "number", "category", "date", "drop"]


@dataclass(frozen=True)
class Column:
    """One raw input column the model uses, and how it becomes features."""

    name: str
    kind: Kind
    raw_type: str  # what a caller passes: double, boolean, string or datetime
    categories: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()  # date parts

    @property
    def features(self) -> list[str]:
        if self.kind == "date":
            return [f"{self.name}.{part}" for part in self.parts]
        return [self.name]


@dataclass(frozen=True)
class Spec:
    """The preprocessing decided at training time: the raw columns in use, in order."""

    columns: tuple[Column, ...]
    missing_tokens: tuple[str, ...] = MISSING_TOKENS

    @property
    def features(self) -> list[str]:
        return [f for c in self.columns for f in c.features]

    @property
    def categories(self) -> dict[str, list[str]]:
        return {c.name: list(c.categories) for c in self.columns if c.kind == "category"}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Spec:
        columns = tuple(
            Column(
                name=c["name"],
                kind=c["kind"],
                raw_type=c["raw_type"],
                categories=tuple(c.get("categories", ())),
                parts=tuple(c.get("parts", ())),
            )
            for c in raw["columns"]
        )
        return cls(columns, tuple(raw.get("missing_tokens", MISSING_TOKENS)))


@dataclass(frozen=True)
class ColumnProfile:
    """What the profile saw in a column and what was decided, in words a person reads."""

    column: str
    dtype: str
    role: Literal["feature", "dropped"]
    kind: str
    distinct: int
    missing: int  # cells missing as loaded
    made_missing: int  # token or unparseable cells turned missing
    features: list[str] = field(default_factory=list)
    reason: str = ""
    changed: bool = False  # anything a user would not assume from the column's type


# --------------------------------------------------------------------------------------------
# Deciding


def profile_columns(
    frame: pd.DataFrame,
    choices: Mapping[str, Choice] | None = None,
    *,
    missing_tokens: tuple[str, ...] = MISSING_TOKENS,
    max_unique_share: float = 0.5,
) -> tuple[Spec, list[ColumnProfile]]:
    """Decide each column's role and type from the training frame (features only).

    Args:
        frame: the raw feature columns.
        choices: per-column overrides (`auto`, `number`, `category`, `date`, `drop`).
        missing_tokens: cell values that mean "missing".
        max_unique_share: text with more distinct values than this share of its non-missing
            cells (and at least `MIN_ID_VALUES`) is identifier-like and left out.

    Raises:
        ConfigError: an override names no column or asks for a type the column cannot have;
            infinite numbers.
    """
    choices = dict(choices or {})
    unknown = [c for c in choices if c not in frame.columns]
    if unknown:
        columns = [str(c) for c in frame.columns]
        close = difflib.get_close_matches(unknown[0], columns, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"data.columns: '{unknown[0]}' is not a feature column{hint}")
    kept: list[Column] = []
    profiles: list[ColumnProfile] = []
    for name in frame.columns:
        column, profile = _decide(
            frame[name], choices.get(name, "auto"), missing_tokens, max_unique_share
        )
        profiles.append(profile)
        if column is not None:
            kept.append(column)
    spec = Spec(tuple(kept), tuple(missing_tokens))
    bad = [f for f in spec.features if any(ch in f for ch in "[]<")]
    if bad:
        raise ConfigError(
            "data: XGBoost does not accept '[', ']' or '<' in feature names: " + ", ".join(bad)
        )
    return spec, profiles


def _decide(
    s: pd.Series, choice: Choice, tokens: tuple[str, ...], max_unique_share: float
) -> tuple[Column | None, ColumnProfile]:
    name = str(s.name)
    raw_type = _raw_type(s)
    missing = int(s.isna().sum())
    dtype = str(s.dtype)

    def dropped(reason: str, distinct: int, made: int = 0) -> tuple[None, ColumnProfile]:
        return None, ColumnProfile(
            column=name,
            dtype=dtype,
            missing=missing,
            role="dropped",
            kind="",
            distinct=distinct,
            made_missing=made,
            reason=reason,
            changed=True,
        )

    def kept(column: Column, distinct: int, made: int, reason: str, changed: bool):
        profile = ColumnProfile(
            column=name,
            dtype=dtype,
            missing=missing,
            role="feature",
            kind=column.kind,
            distinct=distinct,
            made_missing=made,
            features=column.features,
            reason=reason,
            changed=changed,
        )
        return column, profile

    if choice == "drop":
        return dropped("data.columns says drop", int(s.nunique()))
    if pd.api.types.is_timedelta64_dtype(s) or isinstance(
        s.dtype, pd.PeriodDtype | pd.IntervalDtype
    ):
        raise ConfigError(
            f"data: feature '{name}' has type {s.dtype}, which XGBoost cannot use; "
            "convert it to numbers or list it in data.drop"
        )
    if pd.api.types.is_datetime64_any_dtype(s):
        if choice not in ("auto", "date"):
            raise ConfigError(f"data.columns.{name}: a datetime column can only be a date")
        dates = _to_datetime(s, tokens)
        if not _date_parts(dates):
            return dropped("constant: one date or none", int(dates.nunique()))
        column = Column(name, "date", raw_type, parts=_date_parts(dates))
        return kept(column, int(dates.nunique()), 0, "datetime column: calendar numbers", True)
    if pd.api.types.is_bool_dtype(s) or (
        pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype)
    ):
        if pd.api.types.is_complex_dtype(s):
            raise ConfigError(f"data: column '{name}' holds complex numbers")
        values = s.to_numpy(dtype=float, na_value=np.nan)
        if np.isinf(values).any():
            raise ConfigError(f"data: feature '{name}' has infinite values; replace them first")
        distinct = int(s.nunique())
        if choice == "date":
            raise ConfigError(
                f"data.columns.{name}: numbers cannot be read as dates; give date strings"
            )
        if choice == "category":
            text = _text(s, tokens)
            column = Column(name, "category", raw_type, categories=_categories(text))
            return kept(column, distinct, 0, "numbers as categories (data.columns)", True)
        if choice == "auto" and distinct <= 1:
            return dropped("constant: one value or none", distinct)
        if choice == "auto" and _numbers_rows(values):
            lo, hi = int(np.nanmin(values)), int(np.nanmax(values))
            return dropped(
                f"numbers the rows: {distinct} distinct consecutive integers ({lo}..{hi}); "
                f"set data.columns.{name}: number to keep it",
                distinct,
            )
        return kept(Column(name, "number", raw_type), distinct, 0, "numbers", False)

    # Text (or a categorical): tokens are missing; then numbers, dates or categories.
    text = _text(s, tokens)
    tokens_made = int(text.isna().sum()) - missing
    present = text.dropna()
    distinct = int(present.nunique())
    if choice in ("auto", "number") and len(present):
        numbers = pd.to_numeric(present, errors="coerce")
        parsed = float(numbers.notna().mean())
        if choice == "number" or parsed >= PARSE_SHARE:
            made = tokens_made + int(numbers.isna().sum())
            if np.isinf(numbers.to_numpy(dtype=float, na_value=np.nan)).any():
                raise ConfigError(f"data: feature '{name}' has infinite values; replace them first")
            # `any`: a served batch without the tokens reads as floats.
            column = Column(name, "number", "any")
            reason = f"numbers stored as text; {made} cell(s) not numbers made missing"
            return kept(column, int(numbers.nunique()), made, reason, True)
    if choice in ("auto", "date") and len(present):
        dates = _parse_dates(present)
        if choice == "date" or float(dates.notna().mean()) >= PARSE_SHARE:
            made = tokens_made + int(dates.isna().sum())
            parts = _date_parts(_to_datetime(s, tokens))
            if not parts:
                return dropped("constant: one date or none", distinct, made)
            column = Column(name, "date", raw_type, parts=parts)
            reason = "dates as text: calendar numbers" + (
                f"; {made} cell(s) not dates made missing" if made else ""
            )
            return kept(column, distinct, made, reason, True)
    if choice == "auto" and distinct <= 1:
        return dropped("constant: one value or none", distinct, tokens_made)
    if (
        choice == "auto"
        and distinct >= MIN_ID_VALUES
        and distinct > max_unique_share * len(present)
    ):
        return dropped(
            f"identifier-like: {distinct} distinct values in {len(present)} rows; set "
            f"data.columns.{name}: category to keep it",
            distinct,
            tokens_made,
        )
    column = Column(name, "category", raw_type, categories=_categories(text))
    reason = "categories" + (" (data.columns)" if choice == "category" else "")
    reason += f"; {tokens_made} missing-value token(s)" if tokens_made else ""
    return kept(column, distinct, tokens_made, reason, tokens_made > 0 or choice != "auto")


def clean_target(y: pd.Series, tokens: tuple[str, ...]) -> pd.Series:
    """The target with missing-value tokens as missing; text that is numbers (all of it, once
    the tokens are gone) as numbers."""
    if pd.api.types.is_numeric_dtype(y) or isinstance(y.dtype, pd.CategoricalDtype):
        return y
    text = _text(y, tokens)
    numbers = pd.to_numeric(text.dropna(), errors="coerce")
    if len(numbers) and numbers.notna().all():
        return pd.to_numeric(text, errors="coerce").astype("float64")
    return text if text.isna().any() else y


def _numbers_rows(values: np.ndarray) -> bool:
    """Integers, every one distinct, consecutive (gaps from removed rows allowed): a row
    number or sequential id, which predicts nothing about rows yet to come."""
    present = values[~np.isnan(values)]
    if len(present) < MIN_ID_VALUES or len(present) < len(values):
        return False
    if not np.all(present == np.round(present)) or len(np.unique(present)) < len(present):
        return False
    return bool(present.max() - present.min() + 1 <= 1.1 * len(present))


def _raw_type(s: pd.Series) -> str:
    """The column's type in the served model's signature. Integers are `any`: MLflow refuses
    int64 for a double column and a missing value for a long one, and a served batch with a
    gap in an integer column reads as floats."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_float_dtype(s):
        return "double"
    if pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
        return "any"
    return "string"


def _categories(text: pd.Series) -> tuple[str, ...]:
    return tuple(sorted(str(v) for v in text.dropna().unique()))


def _parse_dates(text: pd.Series) -> pd.Series:
    """ISO 8601 dates and datetimes (also with slashes: 2014/03/01), as UTC; anything else is
    NaT. Plain numbers are not dates (a year column stays numbers)."""
    looks = text.str.match(_ISO_DATE, na=False)
    iso = text.where(looks).str.replace(r"^(\d{4})/(\d{2})/", r"\1-\2-", regex=True)
    return pd.to_datetime(iso, format="ISO8601", errors="coerce", utc=True)


def _date_parts(dates: pd.Series) -> tuple[str, ...]:
    """The calendar parts that vary in training (a column of 1 January dates is a year). The
    day of week counts only where the day varies: of a fixed day it is a code of the year."""
    varying = [p for p in (*DATE_PARTS, "hour") if _date_part(dates, p).nunique() > 1]
    if "day_of_year" not in varying and "day_of_week" in varying:
        varying.remove("day_of_week")
    return tuple(varying)


def describe_inputs(rows: pd.DataFrame, spec: Spec) -> dict[str, Any]:
    """What each raw input looked like in training, as a person would set it by hand: numbers'
    range and quartiles (and whether they are whole), categories by frequency, dates' range,
    and the share of missing cells. JSON-able; it travels with the logged model so that an
    input form can be built from the model alone (`glassbox app`)."""
    tokens = spec.missing_tokens
    out: dict[str, Any] = {"rows": len(rows), "columns": {}}
    for column in spec.columns:
        s = rows[column.name]
        entry: dict[str, Any] = {"kind": column.kind}
        if column.kind == "number":
            values = _to_number(s, tokens)
            present = values.dropna().to_numpy()
            quantiles = np.quantile(present, [0, 0.25, 0.5, 0.75, 1]) if present.size else []
            entry.update(
                zip(("min", "q1", "median", "q3", "max"), map(float, quantiles), strict=False)
            )
            entry["integer"] = bool(present.size and np.all(present == np.round(present)))
        elif column.kind == "category":
            text = _text(s, tokens)
            counts = text.value_counts()
            entry["counts"] = {str(k): int(v) for k, v in counts.items()}
            values = text
        else:
            values = _to_datetime(s, tokens)
            present_dates = values.dropna()
            if len(present_dates):
                entry.update(
                    min=present_dates.min().isoformat(),
                    median=present_dates.sort_values().iloc[len(present_dates) // 2].isoformat(),
                    max=present_dates.max().isoformat(),
                )
            entry["time"] = "hour" in column.parts
        entry["missing"] = float(values.isna().mean()) if len(values) else 0.0
        out["columns"][column.name] = entry
    return out


# --------------------------------------------------------------------------------------------
# Applying


def transform(frame: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """The model's features from raw rows: columns in any order, extra columns ignored.

    Raises:
        ConfigError: naming the columns the model needs that `frame` lacks.
    """
    missing = [c.name for c in spec.columns if c.name not in frame.columns]
    if missing:
        raise ConfigError(
            f"input is missing column(s) the model needs: {', '.join(map(str, missing))}"
        )
    tokens = spec.missing_tokens
    out: dict[str, pd.Series] = {}
    for column in spec.columns:
        s = frame[column.name]
        if column.kind == "number":
            out[column.name] = _to_number(s, tokens)
        elif column.kind == "category":
            out[column.name] = pd.Series(
                pd.Categorical(_text(s, tokens), categories=list(column.categories)),
                index=frame.index,
            )
        else:
            dates = _to_datetime(s, tokens)
            for part, feature in zip(column.parts, column.features, strict=True):
                out[feature] = _date_part(dates, part)
    return pd.DataFrame(out, index=frame.index)


def _text(s: pd.Series, tokens: tuple[str, ...]) -> pd.Series:
    """Cells as stripped text (whole numbers without a trailing .0), tokens as missing."""
    if pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
        values = s.astype("Float64")
        whole = values.dropna()
        if len(whole) and (whole == whole.round()).all():
            values = values.astype("Int64")
        text = values.astype("string")
    else:
        text = s.astype("string").str.strip()
    return text.mask(text.isin(tokens))


def _to_number(s: pd.Series, tokens: tuple[str, ...]) -> pd.Series:
    if pd.api.types.is_bool_dtype(s) or (
        pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype)
    ):
        return s.astype("float64")
    return pd.to_numeric(_text(s, tokens), errors="coerce").astype("float64")


def _to_datetime(s: pd.Series, tokens: tuple[str, ...]) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        return pd.to_datetime(s, utc=True)
    return _parse_dates(_text(s, tokens).astype("string"))


def _date_part(dates: pd.Series, part: str) -> pd.Series:
    values = {
        "year": dates.dt.year,
        "month": dates.dt.month,
        "day_of_year": dates.dt.dayofyear,
        "day_of_week": dates.dt.dayofweek,
        "hour": dates.dt.hour,
    }[part]
    return values.astype("float64")
