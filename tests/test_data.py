from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.config import ConfigError, DataConfig, SplitConfig
from tasks.data import (
    dask_split,
    detect_task,
    encode_target,
    prepare,
    split_frame,
    split_summary,
)
from tasks.datasets import FRAUD_ROWS, load_source, make_fraud
from tests.conftest import penguins_like


def _prepare(frame, **cfg):
    return prepare(frame, DataConfig(source="x.csv", **cfg), default_target=None, name="x")


def test_fraud_data_has_the_credit_card_shape():
    frame = make_fraud(seed=3)
    assert len(frame) == FRAUD_ROWS
    assert list(frame.columns) == ["Time", *[f"V{i}" for i in range(1, 29)], "Amount", "Class"]
    assert frame["Class"].sum() == 492
    assert frame["Time"].min() >= 0 and frame["Time"].max() <= 172_792
    assert frame["Amount"].min() >= 0


def test_fraud_data_is_seeded():
    pd.testing.assert_frame_equal(make_fraud(5_000, seed=1), make_fraud(5_000, seed=1))
    assert not make_fraud(5_000, seed=1).equals(make_fraud(5_000, seed=2))


def test_builtins_know_their_target_and_class_names():
    frame, target, name = load_source("builtin:breast_cancer")
    data, info = prepare(
        frame, DataConfig(source="builtin:breast_cancer"), default_target=target, name=name
    )
    assert (info.task, info.classes, info.target) == ("binary", ["malignant", "benign"], "target")
    # sklearn's coding is kept: 0 = malignant
    assert data[info.target].value_counts().to_dict() == {1: 357, 0: 212}


def test_unknown_builtin_lists_the_available_ones():
    with pytest.raises(
        ConfigError, match="unknown built-in data set 'cancer'; available: breast_cancer, wine"
    ):
        load_source("builtin:cancer")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="file not found: .*nope.csv"):
        load_source(str(tmp_path / "nope.csv"))


def test_missing_target_lists_columns_and_suggests_the_closest():
    frame = make_fraud(1_000)
    with pytest.raises(
        ConfigError,
        match=r"data.target: 'Clas' is not a column; did you mean 'Class'\? \(columns: Time, V1,",
    ):
        _prepare(frame, target="Clas")


def test_target_is_required_for_files():
    with pytest.raises(ConfigError, match="data.target is required for x.csv; columns: a, b"):
        _prepare(pd.DataFrame({"a": [1, 2], "b": [3, 4]}))


def test_empty_data_is_refused():
    with pytest.raises(ConfigError, match=r"x.csv is empty \(0 rows\)"):
        _prepare(pd.DataFrame({"a": [], "y": []}), target="y")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_labels_are_refused_with_their_rows(bad):
    frame = pd.DataFrame({"a": range(10), "y": [0.0, 1.0] * 5})
    frame.loc[[3, 7], "y"] = bad
    with pytest.raises(
        ConfigError, match=r"data.target 'y' has 2 missing or infinite values \(rows 3, 7\)"
    ):
        _prepare(frame, target="y")


def test_missing_string_labels_are_refused():
    frame = pd.DataFrame({"a": range(4), "y": ["a", None, "b", "a"]})
    with pytest.raises(ConfigError, match="has 1 missing or infinite values"):
        _prepare(frame, target="y")


def test_one_class_only_is_refused():
    with pytest.raises(ConfigError, match=r"data.target 'y' has one class only \(yes\)"):
        _prepare(pd.DataFrame({"a": range(5), "y": ["yes"] * 5}), target="y")


def test_duplicate_column_names_are_refused(tmp_path):
    path = tmp_path / "dupes.csv"
    path.write_text("a,b,a,y\n1,2,3,0\n4,5,6,1\n")
    with pytest.raises(ConfigError, match="duplicate column names in dupes.csv: a"):
        load_source(str(path))
    frame = pd.DataFrame([[1, 2, 0]], columns=["a", "a", "y"])
    with pytest.raises(ConfigError, match="duplicate column names: a"):
        _prepare(frame, target="y")


def test_unusable_feature_types_are_named():
    frame = pd.DataFrame({"took": pd.to_timedelta([1, 2, 3, 4], unit="s"), "y": [0, 1, 0, 1]})
    with pytest.raises(ConfigError, match="feature 'took' has type timedelta64.*data.drop"):
        _prepare(frame, target="y")
    frame = pd.DataFrame({"x": [1.0, np.inf, 2.0, 3.0], "y": [0, 1, 0, 1]})
    with pytest.raises(ConfigError, match="feature 'x' has infinite values"):
        _prepare(frame, target="y")


def test_unknown_drop_or_id_column_is_named():
    frame = pd.DataFrame({"a": range(4), "y": [0, 1, 0, 1]})
    with pytest.raises(ConfigError, match="data.drop: 'b' is not a column"):
        _prepare(frame, target="y", drop=("b",))
    with pytest.raises(ConfigError, match="data.id_column: 'id' is not a column"):
        _prepare(frame, target="y", id_column="id")


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1, 1, 0], "binary"),
        (["a", "b", "c", "a"], "multiclass"),
        ([True, False, True, True], "binary"),
        ([1, 2, 3, 4, 5, 2], "multiclass"),
        ([0.5, 1.25, 3.0, 2.2], "regression"),
        (list(range(100)), "regression"),
    ],
)
def test_task_is_detected_from_the_target(values, task):
    assert detect_task(pd.Series(values)) == task


def test_string_labels_are_encoded_in_sorted_order_and_positive_class_moves_to_one():
    y = pd.Series(["legit", "fraud", "legit", "legit"])
    codes, classes = encode_target(y, "binary", target="y")
    assert classes == ["fraud", "legit"] and codes.tolist() == [1, 0, 1, 1]
    codes, classes = encode_target(y, "binary", target="y", positive_class="fraud")
    assert classes == ["legit", "fraud"] and codes.tolist() == [0, 1, 0, 0]
    with pytest.raises(
        ConfigError, match="positive_class 'spam' is not a label of 'y' \\(labels: fraud, legit\\)"
    ):
        encode_target(y, "binary", target="y", positive_class="spam")


def test_regression_needs_a_numeric_target():
    with pytest.raises(ConfigError, match="regression but target 'y' is not numeric"):
        encode_target(pd.Series(["a", "b"]), "regression", target="y")


def test_string_features_become_categoricals_with_fixed_categories():
    data, info = _prepare(penguins_like(50), target="species")
    assert info.categories["island"] == ["Biscoe", "Dream", "Torgersen"]
    assert info.categories["sex"] == ["female", "male"]
    assert isinstance(data["island"].dtype, pd.CategoricalDtype)
    assert data["sex"].isna().sum() > 0  # missing stays missing for XGBoost
    assert data["bill_length_mm"].dtype == np.float64


def test_ids_come_from_the_id_column_or_the_input_position():
    frame = pd.DataFrame({"id": [10, 11, 12, 13], "a": range(4), "y": [0, 1, 0, 1]})
    data, info = _prepare(frame, target="y", id_column="id")
    assert data.index.tolist() == [10, 11, 12, 13] and info.features == ["a"]
    data, info = _prepare(frame, target="y", drop=("id",))
    assert data.index.tolist() == [0, 1, 2, 3] and data.index.name == "row_id"


def test_split_is_stratified_seeded_and_complete():
    frame = make_fraud(20_000, seed=1)
    data, info = prepare(
        frame, DataConfig(source="builtin:fraud"), default_target="Class", name="fraud"
    )
    parts = split_frame(data, info, SplitConfig(valid=0.1, test=0.2, seed=4))
    assert {k: len(v) for k, v in parts.items()} == {"train": 14_000, "valid": 2_000, "test": 4_000}
    assert sorted(np.concatenate([p.index for p in parts.values()])) == list(range(20_000))
    rate = data["Class"].mean()
    for part in parts.values():
        assert part["Class"].mean() == pytest.approx(rate, rel=0.15)
    again = split_frame(data, info, SplitConfig(valid=0.1, test=0.2, seed=4))
    assert parts["test"].index.equals(again["test"].index)
    summary = split_summary(parts, info)
    assert summary["data_test_rows"] == 4_000
    assert summary["data_train_share_1"] + summary["data_train_share_0"] == pytest.approx(1)


def test_a_class_too_small_to_split_is_named():
    frame = pd.DataFrame({"a": np.arange(30) % 7, "y": ["a"] * 14 + ["b"] * 14 + ["rare"] * 2})
    data, info = _prepare(frame, target="y")
    with pytest.raises(ConfigError, match="class 'rare' has 2 row"):
        split_frame(data, info, SplitConfig())


def test_split_files_share_categories(tmp_path):
    data, info = _prepare(penguins_like(200), target="species")
    parts = split_frame(data, info, SplitConfig())
    for name, part in parts.items():
        part.to_parquet(tmp_path / f"{name}.parquet")
    x_test, y_test = (c.compute() for c in dask_split(tmp_path / "test.parquet", info))
    x_train = dask_split(tmp_path / "train.parquet", info)[0].compute()
    assert list(x_test["island"].cat.categories) == list(x_train["island"].cat.categories)
    assert set(y_test.unique()) <= {0, 1, 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a,b,y\n1,2,0,9\n3,4,1\n", "bad.csv line 2 has 4 fields, the header has 3"),
        (b"a,b,y\n1,2,0\n3,4\n5,6,1\n", "bad.csv line 3 has 2 fields, the header has 3"),
        (b"", "bad.csv is empty .no header line."),
        (b"\n\n", "bad.csv is empty .no header line."),
        (
            b"a,b,y\n1,caf\xe9,0\n",
            "bad.csv line 2 is not utf-8 text .byte 0xe9.; set data.encoding",
        ),
    ],
)
def test_a_malformed_csv_is_one_line_naming_the_file_and_the_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_source(str(path))


def test_a_quoted_newline_is_one_field_and_latin_1_reads_with_its_encoding(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_bytes(b'a,b,y\n1,"two\nlines",0\n3,caf\xe9,1\n')
    frame, _, _ = load_source(str(path), encoding="latin-1")
    assert frame.shape == (2, 3) and frame.loc[1, "b"] == "caf\u00e9"
    assert frame.loc[0, "b"] == "two\nlines"


def test_an_encoding_error_far_into_the_file_names_its_line(tmp_path):
    path = tmp_path / "long.csv"
    lines = [b"a,y"] + [f"{i},{i % 2}".encode() for i in range(5000)]
    lines[4001] = b"caf\xe9,1"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ConfigError, match="long.csv line 4002 is not utf-8 text .byte 0xe9."):
        load_source(str(path))


def test_batches_and_injected_drift():
    from tasks.config import InjectConfig
    from tasks.datasets import batch_seed, inject_drift

    assert batch_seed(7, 0) == 7  # batch 0 is the data set itself
    one, two = (make_fraud(5_000, seed=batch_seed(7, b)) for b in (1, 2))
    assert not one.equals(two)
    pd.testing.assert_frame_equal(one, make_fraud(5_000, seed=batch_seed(7, 1)))
    assert batch_seed(7, "date") == batch_seed(7, batch_seed(0, "date")[1])  # today's ordinal
    rare = make_fraud(50_000, seed=1)
    common = make_fraud(50_000, seed=1, positive_rate=0.01)
    assert rare["Class"].sum() == round(50_000 * 492 / 284_807) and common["Class"].sum() == 500
    shifted = inject_drift(one, InjectConfig(shift={"V14": 1.5}, scale={"Amount": 2.0}))
    assert shifted["V14"].mean() - one["V14"].mean() == pytest.approx(1.5 * one["V14"].std())
    assert shifted["Amount"].std() == pytest.approx(2 * one["Amount"].std())
    assert shifted["Amount"].mean() == pytest.approx(one["Amount"].mean())
    pd.testing.assert_series_equal(shifted["V1"], one["V1"])
    with pytest.raises(ConfigError, match="'V99' is not a column"):
        inject_drift(one, InjectConfig(shift={"V99": 1.0}))
