"""Column profiling and the one transform used in training and serving."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.config import ConfigError, DataConfig
from tasks.data import prepare, profile_warnings
from tasks.preprocess import Spec, profile_columns, transform
from tests.conftest import messy_frame


def _read_back(frame: pd.DataFrame, tmp_path) -> pd.DataFrame:
    path = tmp_path / "messy.csv"
    frame.to_csv(path, index=False)
    return pd.read_csv(path)


def test_messy_csv_columns_get_what_a_careful_person_gives_them(tmp_path):
    raw = _read_back(messy_frame(1200), tmp_path)
    spec, profile = profile_columns(raw.drop(columns="target"))
    by = {p.column: p for p in profile}
    # a number column with "?" tokens stays numbers; pandas already read "N/A" as missing
    assert by["amount"].kind == "number" and by["amount"].role == "feature"
    tokens = int((raw["amount"] == "?").sum())
    assert by["amount"].made_missing == tokens > 0
    assert f"{tokens} cell(s) not numbers made missing" in by["amount"].reason
    # ISO dates become calendar numbers, never a categorical
    assert by["when"].features == [
        "when.year",
        "when.month",
        "when.day_of_year",
        "when.day_of_week",
    ]
    # identifier-like text and a record number are left out, saying how to keep them
    assert by["name"].role == "dropped" and "identifier-like" in by["name"].reason
    assert "data.columns.name: category" in by["name"].reason
    assert by["record"].role == "dropped" and "numbers the rows" in by["record"].reason
    assert by["city"].kind == "category" and not by["city"].changed
    assert by["tenure"].kind == "number" and not by["tenure"].changed
    assert spec.features == [
        "when.year",
        "when.month",
        "when.day_of_year",
        "when.day_of_week",
        "city",
        "amount",
        "tenure",
    ]
    warnings = profile_warnings(profile)
    assert len(warnings) == 4 and all(w.startswith("column '") for w in warnings)
    x = transform(raw, spec)
    expected = pd.to_numeric(raw["amount"].replace("?", np.nan))
    np.testing.assert_array_equal(x["amount"].to_numpy(), expected.to_numpy())
    dates = pd.to_datetime(raw["when"])
    np.testing.assert_array_equal(x["when.day_of_year"], dates.dt.dayofyear)
    np.testing.assert_array_equal(x["when.day_of_week"], dates.dt.dayofweek)
    assert list(x["city"].cat.categories) == ["Kyiv", "Lima", "Oslo", "Pune"]


def test_overrides_keep_drop_and_retype_columns(tmp_path):
    raw = _read_back(messy_frame(300), tmp_path).drop(columns="target")
    spec, profile = profile_columns(
        raw, {"name": "category", "record": "number", "tenure": "category", "city": "drop"}
    )
    by = {p.column: p for p in profile}
    assert by["name"].kind == "category" and by["record"].kind == "number"
    assert by["city"].role == "dropped" and by["city"].reason == "data.columns says drop"
    assert spec.categories["tenure"][:3] == ["0", "1", "10"]  # whole numbers, no ".0"
    with pytest.raises(ConfigError, match="data.columns: 'nam' is not a feature column; did you"):
        profile_columns(raw, {"nam": "drop"})
    with pytest.raises(ConfigError, match="data.columns.tenure: numbers cannot be read as dates"):
        profile_columns(raw, {"tenure": "date"})


def test_datetimes_and_times_of_day_become_numbers():
    stamps = pd.Series(pd.date_range("2021-03-01 08:00", periods=50, freq="29h"))
    frame = pd.DataFrame(
        {
            "at": stamps,  # a Parquet datetime column
            "text": stamps.dt.strftime("%Y-%m-%dT%H:%M:%S"),
            "day": stamps.dt.strftime("%Y/%m/%d"),  # slashes, year first
            "n": np.random.default_rng(0).normal(size=50),
        }
    )
    spec, _ = profile_columns(frame)
    assert "at.hour" in spec.features and "text.hour" in spec.features
    assert "day.hour" not in spec.features  # no time of day: no hour feature
    assert "at.year" not in spec.features  # one year only: no year feature
    # model years stored as 1 January dates: only the year varies, and the day of week of a
    # fixed day is no feature of its own
    years = pd.DataFrame({"Year": [f"{y}-01-01" for y in range(1970, 1983)] * 3})
    assert profile_columns(years)[0].features == ["Year.year"]
    x = transform(frame, spec)
    np.testing.assert_array_equal(x["at.hour"], stamps.dt.hour)
    np.testing.assert_array_equal(x["text.hour"], stamps.dt.hour)
    np.testing.assert_array_equal(x["at.month"], x["day.month"])


def test_serving_rows_are_encoded_exactly_as_training_rows(tmp_path):
    raw = _read_back(messy_frame(600), tmp_path).drop(columns="target")
    spec, _ = profile_columns(raw)
    trained = transform(raw, spec)
    again = Spec.from_dict(__import__("json").loads(spec.to_json()))
    assert again == spec
    # a few rows, columns shuffled, an extra column, an unseen category, a token in a number
    rows = raw.iloc[[5, 3, 400]].copy()
    rows = rows[list(reversed(rows.columns))].assign(extra="ignored")
    rows.loc[rows.index[0], "city"] = "Atlantis"
    rows.loc[rows.index[1], "amount"] = "-"
    served = transform(rows, again)
    assert list(served.columns) == spec.features
    assert pd.isna(served.loc[5, "city"]) and pd.isna(served.loc[3, "amount"])
    pd.testing.assert_frame_equal(served.loc[[400]], trained.loc[[400]])
    with pytest.raises(ConfigError, match="input is missing column.s. the model needs: when, city"):
        transform(rows.drop(columns=["when", "city"]), spec)


def test_prepare_reads_target_tokens_as_missing_and_numbers_as_numbers():
    frame = pd.DataFrame({"a": np.random.default_rng(0).normal(size=40), "y": ["1.5"] * 40})
    frame.loc[3, "y"] = "?"
    with pytest.raises(ConfigError, match="target 'y' has 1 missing or infinite values .rows 3"):
        prepare(frame, DataConfig(source="x.csv", target="y"), default_target=None, name="x")
    frame.loc[3, "y"] = "2.5"
    data, info = prepare(
        frame, DataConfig(source="x.csv", target="y"), default_target=None, name="x"
    )
    assert info.task == "binary" and info.classes == ["1.5", "2.5"]
    data, info = prepare(
        frame,
        DataConfig(source="x.csv", target="y", task="regression"),
        default_target=None,
        name="x",
    )
    assert data["y"].dtype == np.float64 and data["y"].iloc[3] == 2.5


def test_a_frame_whose_every_column_is_left_out_is_refused():
    frame = pd.DataFrame({"id": [f"u{i}" for i in range(100)], "y": [0, 1] * 50})
    with pytest.raises(ConfigError, match="every feature column was left out .id: identifier"):
        prepare(frame, DataConfig(source="x.csv", target="y"), default_target=None, name="x")
