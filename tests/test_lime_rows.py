from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from lime.discretize import QuartileDiscretizer

from tasks.lime_rows import (
    MISSING,
    BoosterPredictor,
    FastQuartileDiscretizer,
    build_explainer,
    encode,
    explain_chunk,
    page,
)
from tests.conftest import penguins_like


def _signal(task="binary", n=2000, seed=0):
    """x0 drives the target; x1..x4 are noise."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"x{i}" for i in range(5)])
    if task == "regression":
        y = 3 * x["x0"] + rng.normal(0, 0.1, n)
        params = {"objective": "reg:squarederror"}
    else:
        y = (x["x0"] + rng.normal(0, 0.2, n) > 0).astype(int)
        params = {"objective": "binary:logistic"}
    booster = xgb.train({**params, "max_depth": 3}, xgb.DMatrix(x, y), 40)
    return booster, x, y


def _predictor(booster, task, categories=None):
    return BoosterPredictor(bytes(booster.save_raw("ubj")), task, categories or {})


def test_undiscretize_keeps_draws_in_their_bins_with_lime_s_distribution():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3000, 3)) * [1.0, 10.0, 0.1] + [0, 5, -2]
    names = ["a", "b", "c"]
    bins = np.tile(np.repeat(np.arange(4), 2000)[:, None], (1, 3)).astype(float)
    fast = FastQuartileDiscretizer(data, [], names, random_state=0).undiscretize(bins)
    slow = QuartileDiscretizer(data, [], names, random_state=0).undiscretize(bins)
    disc = QuartileDiscretizer(data, [], names)
    assert np.array_equal(disc.discretize(fast), bins)  # every draw lies in its own bin
    for j in range(3):
        for b in range(4):
            ours, lime = fast[bins[:, j] == b, j], slow[bins[:, j] == b, j]
            spread = lime.std() + 1e-12
            assert abs(ours.mean() - lime.mean()) < 0.1 * spread + 0.02 * abs(lime.mean())
            assert ours.std() == pytest.approx(lime.std(), rel=0.1)
    again = FastQuartileDiscretizer(data, [], names, random_state=0).undiscretize(bins)
    assert np.array_equal(fast, again)


def test_predictor_returns_the_booster_s_probabilities_and_values():
    booster, x, _ = _signal()
    proba = _predictor(booster, "binary")(x.to_numpy()[:50])
    np.testing.assert_allclose(proba[:, 1], booster.predict(xgb.DMatrix(x.iloc[:50])), rtol=1e-6)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    reg, xr, _ = _signal("regression")
    np.testing.assert_allclose(
        _predictor(reg, "regression")(xr.to_numpy()[:50]),
        reg.predict(xgb.DMatrix(xr.iloc[:50])),
        rtol=1e-6,
    )


def _explain(booster, x, task, rows, positions, seed, labels=None, classes=("0", "1")):
    explainer = build_explainer(
        encode(x, {}), list(x.columns), {}, list(classes), task == "regression", seed
    )
    return explain_chunk(
        explainer,
        _predictor(booster, task),
        encode(rows, {}),
        labels or [1] * len(rows),
        positions,
        seed=seed,
        num_samples=1000,
        shown=3,
    )


def test_lime_finds_the_feature_that_drives_the_model_and_gives_a_page():
    booster, x, _ = _signal()
    high = int(x["x0"].idxmax())
    (result,) = _explain(booster, x, "binary", x.iloc[[high]], [0], seed=0)
    weights = np.abs(result["weights"])
    assert weights.argmax() == 0 and weights[0] > 5 * weights[1:].max()
    assert result["weights"][0] > 0  # a high x0 pushes P(1) up, as SHAP says
    assert (
        result["conditions"][0].startswith(("x0 <=", "x0 >"))
        or " < x0 <= " in (result["conditions"][0])
    )
    assert 0 < result["score"] <= 1
    html = page(result)
    assert "<html>" in html and "x0" in html
    reg, xr, _ = _signal("regression")
    for row, sign in ((int(xr["x0"].idxmax()), 1), (int(xr["x0"].idxmin()), -1)):
        (value,) = _explain(reg, xr, "regression", xr.iloc[[row]], [0], seed=0, labels=[0])
        assert np.abs(value["weights"]).argmax() == 0 and value["label"] == 0
        assert np.sign(value["weights"][0]) == sign  # the value's direction, not LIME's negation


def test_same_seed_same_weights_whatever_the_chunks():
    booster, x, _ = _signal()
    rows = x.iloc[:4]
    together = _explain(booster, x, "binary", rows, [0, 1, 2, 3], seed=3)
    apart = [_explain(booster, x, "binary", rows.iloc[[i]], [i], seed=3)[0] for i in (3, 1, 0, 2)]
    apart = [apart[2], apart[1], apart[3], apart[0]]
    assert [r["weights"] for r in together] == [r["weights"] for r in apart]
    other = _explain(booster, x, "binary", rows, [0, 1, 2, 3], seed=4)
    assert [r["weights"] for r in other] != [r["weights"] for r in together]


def test_categoricals_and_missing_values_are_explained():
    frame = penguins_like(300)
    y = frame.pop("species").map({"Adelie": 0, "Chinstrap": 1, "Gentoo": 2})
    categories = {"island": ["Biscoe", "Dream", "Torgersen"], "sex": ["female", "male"]}
    for col, cats in categories.items():
        frame[col] = pd.Categorical(frame[col], categories=cats)
    frame["year"] = frame["year"].astype(float)
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3},
        xgb.DMatrix(frame, y, enable_categorical=True),
        20,
    )
    x = encode(frame, categories)
    sex = list(frame.columns).index("sex")
    assert set(np.unique(x[:, sex])) == {0.0, 1.0, 2.0}  # 2: missing
    n_cats = {list(frame.columns).index(c): len(v) for c, v in categories.items()}
    predict = BoosterPredictor(bytes(booster.save_raw("ubj")), "multiclass", n_cats)
    np.testing.assert_allclose(
        predict(x), booster.predict(xgb.DMatrix(frame, enable_categorical=True)), rtol=1e-5
    )
    explainer = build_explainer(
        x, list(frame.columns), categories, ["Adelie", "Chinstrap", "Gentoo"], False, 0
    )
    # a row with a missing number and a missing category
    row = next(i for i in range(len(frame)) if frame["sex"].isna().iloc[i])
    x[row, list(frame.columns).index("bill_length_mm")] = np.nan
    (result,) = explain_chunk(
        explainer, predict, x[[row]], [2], [0], seed=0, num_samples=500, shown=4
    )
    assert np.isfinite(result["weights"]).all()
    assert result["conditions"][sex] == f"sex={MISSING}"
    bill = list(frame.columns).index("bill_length_mm")
    assert result["conditions"][bill].startswith("bill_length_mm is missing (LIME: ")
    assert result["conditions"][list(frame.columns).index("island")].startswith("island=")
