"""Champion vs challenger pieces: outputs aligned by class name, the metric table's directions,
mean |SHAP| against shap.TreeExplainer, and the overlaid figures per task."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tasks.comparison import (
    NotComparable,
    aligned_output,
    curves_figure,
    mean_abs_shap,
    metric_table,
)
from tasks.preprocess import profile_columns


def test_outputs_are_aligned_by_class_name_and_foreign_models_refused():
    proba = pd.DataFrame({"b": [0.2, 0.7], "a": [0.8, 0.3]})
    assert aligned_output(proba, "binary", ["a", "b"]).tolist() == [0.2, 0.7]
    np.testing.assert_allclose(
        aligned_output(proba, "multiclass", ["a", "b"]), [[0.8, 0.2], [0.3, 0.7]]
    )
    with pytest.raises(NotComparable, match="does not know class"):
        aligned_output(proba, "multiclass", ["a", "b", "c"])
    with pytest.raises(NotComparable, match="regressor"):
        aligned_output(np.array([1.0, 2.0]), "binary", ["a", "b"])


def test_metric_table_knows_which_direction_is_better():
    table = metric_table(
        {"roc_auc": 0.9, "log_loss": 0.3},
        {"roc_auc": 0.8, "log_loss": 0.2},
        ["roc_auc", "log_loss"],
    ).set_index("metric")
    assert table.loc["roc_auc", "winner"] == "challenger"
    assert table.loc["log_loss", "winner"] == "champion"
    assert table.loc["log_loss", "delta"] == pytest.approx(0.1)
    first = metric_table({"roc_auc": 0.9}, None, ["roc_auc"])
    assert first.loc[0, "winner"] == "" and np.isnan(first.loc[0, "champion"])


def test_mean_abs_shap_equals_shaps_tree_explainer():
    import shap

    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "x": rng.normal(size=3000),
            "z": rng.normal(size=3000),
            "w": rng.uniform(size=3000),
        }
    )
    spec, _ = profile_columns(rows, {})
    from tasks.preprocess import transform

    features = transform(rows, spec)
    y = (rows["x"] + rows["w"] + rng.normal(size=3000) > 0.5).astype(int)
    booster = xgb.train(
        {"max_depth": 3, "objective": "binary:logistic"},
        xgb.DMatrix(features, y, enable_categorical=True),
        30,
    )

    class Card:
        pass

    card = Card()
    card.spec = spec
    got = mean_abs_shap(booster, card, rows, max_rows=5000)
    values = shap.TreeExplainer(booster).shap_values(features)
    expected = pd.Series(np.abs(values).mean(axis=0), index=features.columns)
    pd.testing.assert_series_equal(
        got.sort_index(), expected.sort_index(), check_names=False, rtol=1e-4
    )
    assert got.index[0] == "x"


def test_overlaid_figures_per_task():
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=500) < 0.3).astype(int)
    a, b = rng.uniform(size=500), np.clip(y * 0.5 + rng.uniform(size=500) * 0.5, 0, 1)
    figs = curves_figure("binary", y, {"champion v1": a, "challenger v2": b}, ["0", "1"])
    assert set(figs) == {"roc", "precision_recall"}
    labels = [t.get_text() for t in figs["roc"].axes[0].get_legend().get_texts()]
    assert labels[0].startswith("champion v1") and labels[1].startswith("challenger v2")
    y3 = rng.integers(0, 3, 300)
    p3 = rng.dirichlet([1, 1, 1], 300)
    (fig,) = curves_figure("multiclass", y3, {"a": p3, "b": p3}, ["x", "y", "z"]).values()
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["x", "y", "z"]
    yr = rng.normal(size=200)
    (fig,) = curves_figure("regression", yr, {"a": yr + 1, "b": yr}, []).values()
    assert "RMSE 1" in fig.axes[0].get_legend().get_texts()[0].get_text()
