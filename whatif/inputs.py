"""The form: one input per raw column the model reads, as a user knows it (before the model's
preprocessing), bounded and described by what training saw, ordered by importance.

Pure: the model's preprocessing spec and its summary of the training inputs
(`tasks.preprocess.describe_inputs`) in, field descriptions and one-row frames out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from tasks.preprocess import Spec

MISSING = "(missing)"
STEPS = 1_000  # a slider's positions across the training range, at most (a round step)
LONG_TAIL = 20  # a number whose range reaches this many interquartile ranges past a quartile


@dataclass(frozen=True)
class InputField:
    """One raw input of the model and how the form offers it."""

    name: str
    kind: Literal["number", "category", "date"]
    info: str  # what training saw, in words
    default: Any  # the training median or most frequent category
    missing: bool  # training had missing cells: the form offers "missing"
    importance: float = 0.0  # mean |SHAP| of the column (its features summed)
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 1.0
    choices: tuple[str, ...] = ()  # categories, most frequent first
    time: bool = False  # dates: the model uses the hour
    box: bool = False  # numbers with a long tail: a number box (a slider would crowd the
    # typical values into its first pixels)


def fields(
    spec: Spec, summary: dict[str, Any], importance: dict[str, float] | None = None
) -> list[InputField]:
    """The form's inputs, most important first (spec order among equals).

    Args:
        spec: the model's preprocessing (which raw columns it reads, and as what).
        summary: `describe_inputs` of the training rows (kept with the model).
        importance: mean |SHAP| per raw column.
    """
    importance = importance or {}
    out = []
    for column in spec.columns:
        seen = summary["columns"].get(column.name, {"kind": column.kind, "missing": 0.0})
        missing = float(seen.get("missing", 0.0)) > 0
        gap = f" · {_share(seen['missing'])} missing in training" if missing else ""
        weight = float(importance.get(column.name, 0.0))
        if column.kind == "number":
            lo, hi = float(seen.get("min", 0.0)), float(seen.get("max", 1.0))
            integer = bool(seen.get("integer", False))
            step = _step(lo, hi, integer)
            lo = _snap(math.floor(lo / step) * step, step)
            hi = _snap(max(math.ceil(hi / step) * step, lo + step), step)
            quartiles = " / ".join(_num(seen.get(q, math.nan)) for q in ("q1", "median", "q3"))
            spread = float(seen.get("q3", hi)) - float(seen.get("q1", lo))
            tail = max(hi - float(seen.get("q3", hi)), float(seen.get("q1", lo)) - lo)
            out.append(
                InputField(
                    column.name,
                    "number",
                    f"training range {_num(seen.get('min'))} to {_num(seen.get('max'))} · "
                    f"quartiles {quartiles}{gap}",
                    _snap(float(seen.get("median", lo)), step),
                    missing,
                    weight,
                    lo,
                    hi,
                    step,
                    box=spread > 0 and tail > LONG_TAIL * spread,
                )
            )
        elif column.kind == "category":
            counts = seen.get("counts", {})
            ordered = sorted(column.categories, key=lambda c: (-counts.get(c, 0), c))
            total = sum(counts.values()) or 1
            top = ", ".join(f"{c} {counts.get(c, 0) / total:.0%}" for c in ordered[:3])
            more = f" +{len(ordered) - 3} more" if len(ordered) > 3 else ""
            out.append(
                InputField(
                    column.name,
                    "category",
                    f"{len(ordered)} categories: {top}{more}{gap}",
                    ordered[0] if ordered else MISSING,
                    missing,
                    weight,
                    choices=(*ordered, *((MISSING,) if missing else ())),
                )
            )
        else:
            lo, hi = seen.get("min", ""), seen.get("max", "")
            time = bool(seen.get("time", False))
            out.append(
                InputField(
                    column.name,
                    "date",
                    f"training dates {_day(lo, time)} to {_day(hi, time)}{gap}",
                    _day(seen.get("median", lo), time),
                    missing,
                    weight,
                    time=time,
                )
            )
    order = sorted(range(len(out)), key=lambda i: (-out[i].importance, i))
    return [out[i] for i in order]


def to_row(form: list[InputField], values: dict[str, Any]) -> pd.DataFrame:
    """One raw row as the model takes it from the form's values (by column name): numbers as
    floats, categories and dates as text; "missing" (None, NaN, an empty date, `MISSING`) as a
    missing cell."""
    row: dict[str, Any] = {}
    for f in form:
        value = values.get(f.name)
        if is_missing(value):
            row[f.name] = np.nan if f.kind == "number" else None
        elif f.kind == "number":
            row[f.name] = float(value)  # type: ignore[arg-type]
        else:
            row[f.name] = str(value)
    frame = pd.DataFrame([row])
    return frame.astype({f.name: object for f in form if f.kind != "number"})


def from_row(form: list[InputField], row: pd.Series) -> dict[str, Any]:
    """The form's values of a raw row (a kept test row): numbers as floats, categories by name,
    dates as ISO text; a missing cell as None. A cell the form cannot show (a category training
    never saw, text in a number column) is missing, as the model reads it."""
    out: dict[str, Any] = {}
    for f in form:
        value = row.get(f.name)
        if is_missing(value):
            out[f.name] = None
        elif f.kind == "number":
            number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
            out[f.name] = None if pd.isna(number) else float(number)
        elif f.kind == "category":
            text = _category_text(value)
            out[f.name] = text if text in f.choices else None
        else:
            stamp = pd.to_datetime(pd.Series([str(value)]), errors="coerce", utc=True).iloc[0]
            out[f.name] = None if pd.isna(stamp) else _day(stamp.isoformat(), f.time)
    return out


def shown(value: Any) -> str:
    """A form value as the page writes it."""
    if is_missing(value):
        return "missing"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _num(value)
    return str(value)


def same(a: Any, b: Any) -> bool:
    """Two form values are the same input (1 and 1.0 are; missing and missing are)."""
    if is_missing(a) or is_missing(b):
        return is_missing(a) and is_missing(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)
    return str(a) == str(b)


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT or value == MISSING or value == "":
        return True
    return isinstance(value, float) and math.isnan(value)


def _category_text(value: Any) -> str:
    """A cell as the model's category text: whole numbers without a trailing .0 (as
    `tasks.preprocess` reads them)."""
    if isinstance(value, float) and value == round(value):
        return str(int(value))
    return str(value).strip()


def _step(lo: float, hi: float, integer: bool) -> float:
    """A round slider step: about `STEPS` positions across the range (1 for whole numbers with
    a narrower range)."""
    span = hi - lo
    if span <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(span / STEPS))
    return max(step, 1.0) if integer else float(step)


def _snap(value: float, step: float) -> float:
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return round(round(value / step) * step, digits)


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    value = float(value)
    if value == round(value) and abs(value) < 1e15:
        # No separator below 10,000: years and codes read as 2009, not 2,009.
        return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
    return f"{value:,.4g}" if abs(value) >= 1e-3 else f"{value:.3g}"


def _share(share: float) -> str:
    return f"{share:.1%}" if share < 0.1 else f"{share:.0%}"


def _day(iso: Any, time: bool) -> str:
    """ISO text of a date, or a datetime to the minute when the model uses the hour."""
    if not iso:
        return ""
    stamp = pd.Timestamp(iso)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.strftime("%Y-%m-%d %H:%M" if time else "%Y-%m-%d")
