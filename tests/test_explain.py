from __future__ import annotations

import dask.dataframe as dd
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import shap
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from tasks.explain import explain_sample, explanations, shap_figures, shap_frame, shap_values

CASES = {
    "binary": (load_breast_cancer, {"objective": "binary:logistic"}),
    "multiclass": (load_wine, {"objective": "multi:softprob", "num_class": 3}),
    "regression": (load_diabetes, {"objective": "reg:squarederror"}),
}


def _model(task):
    loader, params = CASES[task]
    x, y = loader(return_X_y=True, as_frame=True)
    booster = xgb.train({**params, "max_depth": 4}, xgb.DMatrix(x, y), 30)
    return booster, x, y


@pytest.mark.parametrize("task", list(CASES))
def test_shap_values_equal_tree_explainer_and_add_up_to_the_margin(cluster, task):
    booster, x, _ = _model(task)
    contribs = shap_values(cluster.client, booster, dd.from_pandas(x, npartitions=2))
    reference = shap.TreeExplainer(booster)(x)
    if task == "multiclass":
        assert contribs.shape == (len(x), 3, x.shape[1] + 1)
        ours = np.moveaxis(contribs[:, :, :-1], 1, 2)  # shap keeps classes last
        base = contribs[:, :, -1]
    else:
        assert contribs.shape == (len(x), x.shape[1] + 1)
        ours, base = contribs[:, :-1], contribs[:, -1]
    np.testing.assert_allclose(ours, reference.values, atol=1e-4)
    np.testing.assert_allclose(base, reference.base_values, atol=1e-4)
    margin = booster.predict(xgb.DMatrix(x), output_margin=True)
    np.testing.assert_allclose(contribs.sum(-1), margin, atol=1e-4)


def test_sample_is_seeded_and_stratified():
    y = np.array([0] * 900 + [1] * 100)
    idx = explain_sample(y, "binary", 200, seed=3)
    assert len(idx) == 200 and y[idx].sum() == 20
    assert np.array_equal(idx, explain_sample(y, "binary", 200, seed=3))
    assert len(explain_sample(y, "binary", "all", 0)) == 1000
    rare = np.array([0] * 99 + [1])  # one positive: cannot stratify, still sampled
    assert len(explain_sample(rare, "binary", 10, 0)) == 10


def test_values_table_has_row_ids_classes_and_base_values():
    contribs = np.arange(2 * 3 * 3, dtype=float).reshape(2, 3, 3)
    frame = shap_frame(contribs, np.array([7, 9]), ["a", "b"], ["x", "y", "z"])
    assert list(frame.columns) == ["row_id", "class", "base_value", "a", "b"]
    assert len(frame) == 6 and list(frame["class"].unique()) == ["x", "y", "z"]
    assert frame.loc[(frame.row_id == 9) & (frame["class"] == "y"), "base_value"].item() == 14.0


@pytest.mark.parametrize(
    ("task", "classes"), [("binary", ["m", "b"]), ("multiclass", ["c0", "c1", "c2"])]
)
def test_global_figures_per_class_with_titles(cluster, task, classes):
    booster, x, _ = _model(task)
    x = x.iloc[:80]
    contribs = booster.predict(xgb.DMatrix(x), pred_contribs=True)
    expl = explanations(contribs, x, classes)
    made = {}
    for name, fig in shap_figures(expl, max_display=8, dependence_top_k=2):
        made[name] = fig._suptitle.get_text()
        plt.close(fig)
    deps = [n for n in made if n.startswith("dependence_")]
    assert len(deps) == 2
    if task == "binary":
        assert {"beeswarm", "bar"} <= set(made) and len(made) == 4
        assert made["beeswarm"] == "SHAP values per feature"
    else:
        assert {f"beeswarm_{c}" for c in classes} | {f"bar_{c}" for c in classes} | {
            "bar_stacked"
        } <= set(made)
        assert made["bar_c1"] == "Mean |SHAP value| (class c1 margin)"
    assert made[deps[0]].startswith("SHAP dependence: ")
    assert plt.get_fignums() == []  # nothing left open once the caller closed them


def test_categorical_features_are_explained(cluster):
    rng = np.random.default_rng(0)
    x = pd.DataFrame(
        {"num": rng.normal(size=300), "cat": pd.Categorical(rng.choice(["a", "b", "c"], 300))}
    )
    y = (x["num"] + (x["cat"] == "b") > 0.5).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic"}, xgb.DMatrix(x, y, enable_categorical=True), 10
    )
    contribs = shap_values(cluster.client, booster, dd.from_pandas(x, npartitions=1))
    margin = booster.predict(xgb.DMatrix(x, enable_categorical=True), output_margin=True)
    np.testing.assert_allclose(contribs.sum(-1), margin, atol=1e-4)
    (e,) = explanations(contribs, x, ["0", "1"]).values()
    assert set(np.unique(e.data[:, 1])) == {0.0, 1.0, 2.0}  # category codes colour the plots


def test_local_rows_follow_the_rules_and_keep_the_input_ids():
    from tasks.config import ConfigError, ExplainConfig
    from tasks.explain import select_rows

    ids = np.array([100, 101, 102, 103, 104, 105])
    y = np.array([0, 0, 1, 1, 0, 1])
    score = np.array([0.9, 0.2, 0.95, 0.1, 0.6, 0.3])
    cfg = ExplainConfig(top_risk=2, errors=2, random_rows=3, row_ids=(104,), seed=1)
    rows = select_rows(ids, y, score, "binary", cfg)
    assert rows["top_risk"] == [102, 100]
    assert rows["false_positives"] == [100, 104]  # most confident first
    assert rows["false_negatives"] == [103, 105]
    assert len(rows["random"]) == 3 and set(rows["random"]) <= set(ids)
    assert rows["requested"] == [104]
    assert select_rows(ids, y, score, "binary", cfg) == rows  # seeded
    reg = select_rows(ids, y * 10.0, score, "regression", ExplainConfig(errors=1, random_rows=0))
    assert reg == {"largest_residuals": [103]}  # |10 - 0.1|
    with pytest.raises(ConfigError, match="explain.row_ids: not in the test set: 7"):
        select_rows(ids, y, score, "binary", ExplainConfig(row_ids=(7,)))


def test_local_plots_are_a_waterfall_and_a_force_page_per_row():
    from tasks.explain import local_plots

    booster, x, _ = _model("multiclass")
    rows = x.iloc[:2]
    contribs = booster.predict(xgb.DMatrix(rows), pred_contribs=True)
    score = booster.predict(xgb.DMatrix(rows))
    made = list(local_plots(contribs, rows, score, ["c0", "c1", "c2"]))
    assert [row_id for row_id, _, _ in made] == [0, 1]
    for row_id, fig, html in made:
        assert fig._suptitle.get_text().startswith(
            f"Row {row_id}: why the model said that (margin of class c"
        )
        assert "<html>" in html and "SHAP" in html
        plt.close(fig)
    assert plt.get_fignums() == []
