"""The what-if page's pure parts: the form built from the model's description of its inputs, the
prediction and SHAP contributions of one edited row (checked against the served model and
XGBoost's batch TreeSHAP), the change from a starting row, the HTML, and the rows kept with a run.
Models are trained here on the messy data the tests make (dates, tokens, gaps, string labels)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tasks.calibration import Platt
from tasks.config import DataConfig
from tasks.data import kept_test_rows, prepare
from tasks.preprocess import describe_inputs, transform
from tasks.serving import ModelCard, predict
from tests.conftest import messy_frame
from whatif import render
from whatif.explainer import LocalLime, WhatIf, difference
from whatif.inputs import MISSING, fields, from_row, to_row

OBJECTIVES = {
    "binary": {"objective": "binary:logistic"},
    "multiclass": {"objective": "multi:softprob", "num_class": 3},
    "regression": {"objective": "reg:squarederror"},
}


def _model(task: str, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp(task) / "messy.csv"
    messy_frame(1500, task, seed=3).to_csv(path, index=False)
    raw = pd.read_csv(path)  # as a user has it: "?" and "N/A" in amount, gaps in city
    data, info = prepare(
        raw,
        DataConfig(source=str(path), target="target", task=task),
        default_target=None,
        name=task,
    )
    booster = xgb.train(
        {**OBJECTIVES[task], "max_depth": 4, "seed": 0},
        xgb.DMatrix(data[info.features], data["target"], enable_categorical=True),
        60,
    )
    card = ModelCard(
        task=task,
        spec=info.spec,
        classes=info.classes,
        threshold=0.4,
        calibration=Platt(0.8, -0.3) if task == "binary" else None,
        labels=info.label_values,
    )
    rows = raw.drop(columns="target")
    return {"raw": raw, "rows": rows, "info": info, "booster": booster, "card": card}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return {task: _model(task, tmp_path_factory) for task in OBJECTIVES}


def _form(m: dict, importance: dict | None = None):
    return fields(m["card"].spec, describe_inputs(m["rows"], m["card"].spec), importance)


def test_the_inputs_summary_is_what_training_saw(models):
    m = models["binary"]
    summary = describe_inputs(m["rows"], m["card"].spec)["columns"]
    # The record number and the near-unique name are not inputs of the model.
    assert set(summary) == {"when", "city", "amount", "tenure"}
    amount = pd.to_numeric(m["rows"]["amount"], errors="coerce")
    q = np.nanquantile(amount, [0, 0.25, 0.5, 0.75, 1])
    got = [summary["amount"][k] for k in ("min", "q1", "median", "q3", "max")]
    np.testing.assert_allclose(got, q)
    assert summary["amount"]["missing"] == pytest.approx(amount.isna().mean())
    assert summary["amount"]["integer"] is False and summary["tenure"]["integer"] is True
    assert summary["city"]["counts"] == m["rows"]["city"].value_counts().to_dict()
    assert summary["city"]["missing"] == pytest.approx(m["rows"]["city"].isna().mean())
    dates = pd.to_datetime(m["rows"]["when"])
    assert summary["when"]["min"].startswith(str(dates.min().date()))
    assert summary["when"]["max"].startswith(str(dates.max().date()))
    assert summary["when"]["missing"] == 0.0


def test_the_form_puts_important_inputs_first_and_offers_missing_where_training_had_it(models):
    m = models["binary"]
    form = _form(m, {"tenure": 0.5, "amount": 2.0, "city": 1.0, "when": 0.1})
    assert [f.name for f in form] == ["amount", "city", "tenure", "when"]
    by = {f.name: f for f in form}
    amount = pd.to_numeric(m["rows"]["amount"], errors="coerce")
    assert by["amount"].minimum <= amount.min() and by["amount"].maximum >= amount.max()
    assert by["amount"].missing and not by["tenure"].missing and not by["when"].missing
    assert "quartiles" in by["amount"].info and "missing in training" in by["amount"].info
    assert by["tenure"].step == 1.0  # whole numbers
    assert by["city"].choices[-1] == MISSING and set(by["city"].choices[:-1]) == {
        "Oslo",
        "Lima",
        "Pune",
        "Kyiv",
    }
    assert by["city"].choices[0] == m["rows"]["city"].value_counts().index[0]  # most frequent
    assert by["when"].kind == "date" and by["when"].default[:4].isdigit()


@pytest.mark.parametrize("task", list(OBJECTIVES))
def test_every_row_survives_the_form_as_the_model_reads_it(models, task):
    """A row put into the form and read back is the same model input: tokens and gaps
    missing, categories by name, dates as dates."""
    m = models[task]
    form = _form(m)
    spec = m["card"].spec
    want = transform(m["rows"], spec)
    back = pd.concat(
        [to_row(form, from_row(form, row)) for _, row in m["rows"].iterrows()], ignore_index=True
    )
    got = transform(back, spec)
    got.index = want.index
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("task", list(OBJECTIVES))
def test_one_row_explanations_add_up_to_what_the_served_model_says(models, task):
    m = models[task]
    card, booster = m["card"], m["booster"]
    whatif = WhatIf(booster, card)
    form = _form(m)
    rows = m["rows"].iloc[::5]  # 300 rows, every code path: tokens, gaps, all classes
    served = predict(booster, card, rows, "predict_proba")
    labels = predict(booster, card, rows)
    batch = booster.predict(
        xgb.DMatrix(transform(rows, card.spec), enable_categorical=True), pred_contribs=True
    )
    spec_features = card.spec.features
    for i, (_, row) in enumerate(rows.iterrows()):
        e = whatif.explain(form, from_row(form, row))
        if task != "regression":  # the label as served: at the threshold, by name
            assert e.label == str(labels[i])
        if task == "regression":
            assert e.outputs["value"] == pytest.approx(float(served[i]), rel=1e-5)
            assert e.total == pytest.approx(float(served[i]), rel=1e-4, abs=1e-4)
            want = batch[i]
        elif task == "binary":
            p = served.iloc[i][card.classes[1]]
            assert e.outputs[card.classes[1]] == pytest.approx(p, rel=1e-5)
            assert e.total == pytest.approx(np.log(p / (1 - p)), rel=1e-4, abs=1e-4)
            want = batch[i] * card.calibration.slope
        else:
            k = card.classes.index(e.explained)
            assert e.explained == max(e.outputs, key=e.outputs.get)
            np.testing.assert_allclose(
                [e.outputs[c] for c in card.classes], served.iloc[i].to_numpy(), rtol=1e-5
            )
            want = batch[i, k]
            # The other classes' totals give the same softmax as the served probabilities.
            totals = [whatif.explain(form, e.values, c).total for c in card.classes]
            soft = np.exp(totals) / np.exp(totals).sum()
            np.testing.assert_allclose(soft, served.iloc[i].to_numpy(), rtol=1e-4, atol=1e-6)
        # Per raw column: the batch TreeSHAP of its features, summed (a date's parts as one).
        for column in card.spec.columns:
            idx = [spec_features.index(f) for f in column.features]
            assert e.contributions[column.name] == pytest.approx(
                float(want[idx].sum()), rel=1e-4, abs=1e-5
            )


def test_the_change_from_the_start_is_attributed_in_full_with_edits_first(models):
    m = models["binary"]
    whatif, form = WhatIf(m["booster"], m["card"]), _form(m)
    start = whatif.explain(form, from_row(form, m["rows"].iloc[7]))
    values = dict(start.values, amount=400.0, city=MISSING)
    now = whatif.explain(form, values)
    changes = difference(start, now, top=10)
    assert [c.edited for c in changes][:2] == [True, True]
    assert {c.column for c in changes if c.edited} == {"amount", "city"}
    assert changes[1].now == "missing"
    # The inputs' pushes add up to the whole move of the log-odds.
    assert sum(c.delta for c in changes) == pytest.approx(now.total - start.total, abs=1e-6)
    same = difference(start, whatif.explain(form, dict(start.values)))
    assert not any(c.edited for c in same)


def test_the_pages_html_escapes_names_and_values_from_users_files(models):
    m = models["multiclass"]
    whatif, form = WhatIf(m["booster"], m["card"]), _form(m)
    e = whatif.explain(form, from_row(form, m["rows"].iloc[0]))
    hostile = "<img src=x onerror=alert(1)>"
    e = type(e)(
        **{
            **e.__dict__,
            "values": {**e.values, "city": hostile},
            "contributions": {**e.contributions, hostile: 0.5},
        }
    )
    html = (
        render.waterfall(e) + render.prediction(e) + render.change(e, e, difference(e, e), hostile)
    )
    assert hostile not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert f"{e.total:.3g}" in render.waterfall(e)


def test_lime_explains_one_edited_row_reproducibly(models):
    m = models["binary"]
    form = _form(m)
    lime = LocalLime(m["card"], m["booster"], m["rows"].head(1000), samples=2_000)
    values = from_row(form, m["rows"].iloc[3])
    first = lime.explain(form, values, m["card"].classes[1], 5)
    again = lime.explain(form, values, m["card"].classes[1], 5)
    assert [w["weight"] for w in first["weights"]] == [w["weight"] for w in again["weights"]]
    assert len(first["weights"]) == 5 and first["r2"] <= 1.0
    weights = [abs(w["weight"]) for w in first["weights"]]
    assert weights == sorted(weights, reverse=True)
    assert any("amount" in w["condition"] for w in first["weights"])


def test_a_run_keeps_every_rare_row_and_a_seeded_sample_of_the_rest():
    rng = np.random.default_rng(0)
    n = 20_000
    target = pd.Series(np.where(rng.random(n) < 0.003, "fraud", "ok"), name="Class")
    rows = pd.DataFrame({"amount": rng.gamma(2, 50, n), "note": ["a"] * n}).astype({"note": object})
    kept = kept_test_rows(rows, target, cap=1_000, seed=1, classes=True)
    assert len(kept) == 1_000
    assert (kept["Class"] == "fraud").sum() == (target == "fraud").sum()  # every fraud kept
    assert kept.index.is_monotonic_increasing  # the split's order
    assert kept["note"].dtype == "string"
    again = kept_test_rows(rows, target, cap=1_000, seed=1, classes=True)
    pd.testing.assert_frame_equal(kept, again)
    small = kept_test_rows(rows.head(50), target.head(50), cap=1_000, seed=1, classes=True)
    assert len(small) == 50


def test_a_long_tailed_number_is_a_box_and_a_compact_one_a_slider():
    """Fraud's Amount (quartiles 6 / 22 / 77, maximum 25,691): on a slider the typical amounts
    would share its first pixels."""
    from tasks.preprocess import Column, Spec

    spec = Spec((Column("Amount", "number", "double"), Column("V1", "number", "double")))
    summary = {
        "columns": {
            "Amount": {"kind": "number", "min": 0.0, "q1": 5.6, "median": 22.0, "q3": 77.0,
                       "max": 25691.0, "integer": False, "missing": 0.0},
            "V1": {"kind": "number", "min": -5.6, "q1": -0.9, "median": 0.0, "q3": 0.9,
                   "max": 4.8, "integer": False, "missing": 0.0},
        }
    }  # fmt: skip
    by = {f.name: f for f in fields(spec, summary)}
    assert by["Amount"].box and not by["V1"].box
    assert by["Amount"].minimum <= 0 and by["Amount"].maximum >= 25691
