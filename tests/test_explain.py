from __future__ import annotations

import dask.dataframe as dd
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import shap
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from tasks.treeshap import explain_sample, explanations, shap_figures, shap_frame, shap_values

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


def test_figures_draw_a_stratified_sample_when_many_rows_are_explained():
    booster, x, y = _model("multiclass")
    contribs = booster.predict(xgb.DMatrix(x), pred_contribs=True)
    expl = explanations(
        contribs, x, ["a", "b", "c"], max_rows=60, y=y.to_numpy(), task="multiclass", seed=1
    )
    assert all(e.values.shape == (60, x.shape[1]) for e in expl.values())
    kept = x.index.get_indexer(
        pd.DataFrame(expl["a"].data, columns=x.columns).merge(x.reset_index()).loc[:, "index"]
    )
    shares = np.bincount(y.to_numpy()[kept], minlength=3) / 60
    np.testing.assert_allclose(shares, np.bincount(y.to_numpy()) / len(y), atol=0.02)
    everything = explanations(contribs, x, ["a", "b", "c"], max_rows=1000)
    assert everything["a"].values.shape[0] == len(x)


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
    if task == "binary":
        assert {"beeswarm", "bar"} <= set(made) and len(made) == 4
        assert made["beeswarm"] == "SHAP values per feature"
        assert len(deps) == 2 and made[deps[0]].startswith("SHAP dependence: ")
    else:
        assert {f"beeswarm_{c}" for c in classes} | {f"bar_{c}" for c in classes} | {
            "bar_stacked"
        } <= set(made)
        assert made["bar_c1"] == "Mean |SHAP value| (class c1 margin)"
        # each class's own top features, named and titled with the class
        assert len(deps) == 6
        for c in classes:
            own = [n for n in deps if n.startswith(f"dependence_{c}_")]
            assert len(own) == 2
            assert all(made[n].endswith(f"(class {c} margin)") for n in own)
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
    x.loc[:9, "cat"] = None
    (e,) = explanations(contribs, x, ["0", "1"]).values()
    # plots read category names, never codes; gaps read "missing"
    assert set(e.display_data[:, 1]) == {"a", "b", "c", "missing"}
    assert e.display_data[12, 1] == x["cat"].iloc[12]
    assert e.data[:, 0].astype(float) == pytest.approx(x["num"].to_numpy())
    drawn = dict(shap_figures({None: e}, max_display=2, dependence_top_k=2))
    fig = drawn["dependence_cat"]
    labels = {t.get_text() for t in fig.axes[0].get_xticklabels()}
    assert labels == {"a", "b", "c", "missing"}
    for f in drawn.values():
        plt.close(f)
    from tasks.treeshap import local_plots

    rows = x.iloc[[0, 12]]
    row_contribs = booster.predict(xgb.DMatrix(rows, enable_categorical=True), pred_contribs=True)
    (_, gap, _), (_, named, _) = local_plots(row_contribs, rows, ["class 1", "class 1"])
    waterfall_labels = {t.get_text() for t in named.axes[0].get_yticklabels()}
    assert f"{x['cat'].iloc[12]} = cat" in waterfall_labels
    assert "missing = cat" in {t.get_text() for t in gap.axes[0].get_yticklabels()}
    plt.close(gap)
    plt.close(named)


def test_local_rows_follow_the_rules_and_keep_the_input_ids():
    from tasks.config import ConfigError, ExplainConfig
    from tasks.row_picking import select_rows

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
    from tasks.treeshap import explained_labels, local_plots, row_values

    booster, x, _ = _model("multiclass")
    rows = x.iloc[[0, 170]]
    contribs = booster.predict(xgb.DMatrix(rows), pred_contribs=True)
    labels = explained_labels(booster.predict(xgb.DMatrix(rows)), "multiclass")
    assert labels.tolist() == [0, 2]  # each row on the margin of its predicted class
    values = row_values(contribs, labels)
    np.testing.assert_array_equal(values[1], contribs[1, 2])
    made = list(local_plots(values, rows, ["class c0", "class c2"]))
    assert [row_id for row_id, _, _ in made] == [0, 170]
    for (row_id, fig, html), what in zip(made, ["class c0", "class c2"], strict=True):
        assert fig._suptitle.get_text() == f"Row {row_id}: why the model said that ({what})"
        assert "<html>" in html and "SHAP" in html
        plt.close(fig)
    assert plt.get_fignums() == []


def test_interactions_equal_tree_explainer(cluster):
    from tasks.treeshap import shap_interactions

    booster, x, _ = _model("multiclass")
    x = x.iloc[:60]
    ours = shap_interactions(cluster.client, booster, dd.from_pandas(x, npartitions=2))
    reference = np.abs(shap.TreeExplainer(booster).shap_interaction_values(x))
    # shap: (rows, features, features, classes)
    np.testing.assert_allclose(ours, reference.mean(axis=(0, 3)), atol=1e-4)
    assert ours.shape == (x.shape[1], x.shape[1])


def test_agreement_of_shap_and_lime():
    from tasks.lime_rows import agreement

    same = agreement(np.array([3.0, -2.0, 1.0, 0.1]), np.array([0.3, -0.2, 0.1, 0.0]), 2)
    assert same["top_k_jaccard"] == 1.0 and same["spearman"] == pytest.approx(1.0)
    assert same["top_k_jaccard_adjusted"] == pytest.approx(1.0)
    apart = agreement(np.array([3.0, 2.0, 0.1, 0.2]), np.array([0.0, 0.1, 2.0, 3.0]), 2)
    assert apart["top_k_jaccard"] == 0.0 and apart["spearman"] < 0
    half = agreement(np.array([3.0, 2.0, 0.5, 0.1]), np.array([3.0, 0.0, 2.0, 0.1]), 2)
    assert half["top_k_jaccard"] == pytest.approx(1 / 3)
    assert np.isnan(agreement(np.ones(3), np.array([1.0, 2.0, 3.0]), 2)["spearman"])


def test_top_k_agreement_is_judged_against_chance():
    from tasks.lime_rows import agreement, chance_jaccard, compared_k

    # k is at most a third of the features: with 5 features, top-5 sets always agree
    assert compared_k(5, 5) == 1 and compared_k(7, 5) == 2 and compared_k(30, 5) == 5
    rng = np.random.default_rng(0)
    for n, k in [(7, 5), (7, 2), (30, 5)]:
        draws = [
            len(set(a) & set(b)) / len(set(a) | set(b))
            for a, b in (
                (rng.choice(n, k, replace=False), rng.choice(n, k, replace=False))
                for _ in range(20_000)
            )
        ]
        assert chance_jaccard(n, k) == pytest.approx(np.mean(draws), abs=0.01)
    assert chance_jaccard(7, 5) == pytest.approx(0.57, abs=0.01)  # the number
    assert chance_jaccard(5, 5) == 1.0
    # random attributions score about 0 once adjusted for chance
    adjusted = [
        agreement(rng.normal(size=12), rng.normal(size=12), 4)["top_k_jaccard_adjusted"]
        for _ in range(3000)
    ]
    assert abs(np.mean(adjusted)) < 0.03


def test_agreement_metrics_summarise_only_rows_lime_fits():
    from tasks.lime_dask import agreement_metrics

    table = pd.DataFrame(
        {
            "top_k_jaccard": [1.0, 0.2, 0.6],
            "top_k_jaccard_chance": [0.2, 0.2, 0.2],
            "top_k_jaccard_adjusted": [1.0, 0.0, 0.5],
            "spearman": [0.9, -0.5, 0.7],
            "lime_score": [0.01, 0.6, 0.8],
            "trusted": [False, True, True],
        }
    )
    metrics = agreement_metrics(table)
    assert metrics["shap_lime_top_k_jaccard_mean"] == pytest.approx(0.4)
    assert metrics["shap_lime_spearman_mean"] == pytest.approx(0.1)
    assert metrics["shap_lime_rows_trusted"] == 2 and metrics["shap_lime_rows"] == 3


def test_lime_on_the_cluster_equals_lime_in_one_process(cluster):
    from tasks.config import ExplainConfig
    from tasks.data import DatasetInfo
    from tasks.lime_dask import lime_rows
    from tasks.lime_rows import BoosterPredictor, build_explainer, encode, explain_chunk, page

    booster, x, _ = _model("multiclass")
    info = DatasetInfo(
        name="wine",
        source="builtin:wine",
        target="target",
        task="multiclass",
        features=list(x.columns),
        classes=["c0", "c1", "c2"],
    )
    cfg = ExplainConfig(lime_samples=800, lime_train_rows=100, lime_features=4, seed=5)
    rows = x.iloc[[0, 60, 120, 170]]
    labels = booster.predict(xgb.DMatrix(rows)).argmax(1)
    contribs = booster.predict(xgb.DMatrix(rows), pred_contribs=True)
    shap_rows = contribs[np.arange(4), labels, :-1]
    spread = cluster.client.gather(
        lime_rows(cluster.client, booster, x, rows, labels, shap_rows, info, cfg)
    )
    assert [r["label"] for r in spread] == labels.tolist()
    explainer = build_explainer(
        encode(x.sample(100, random_state=5), {}), list(x.columns), {}, info.classes, False, 5
    )
    predict = BoosterPredictor(bytes(booster.save_raw("ubj")), "multiclass", {})
    local = explain_chunk(
        explainer,
        predict,
        encode(rows, {}),
        labels.tolist(),
        [0, 1, 2, 3],
        seed=5,
        num_samples=800,
        shown=4,
    )
    assert [r["weights"] for r in spread] == [r["weights"] for r in local]
    assert all(page(r).count("<html>") == 1 for r in spread)
    # each row's figures and agreement, drawn on the worker
    first = spread[0]
    assert first["comparison"].startswith(b"\x89PNG") and "chart" not in first
    assert set(first["agreement"]) == {
        "top_k_jaccard",
        "top_k_jaccard_chance",
        "top_k_jaccard_adjusted",
        "spearman",
    }
    assert first["trusted"] == (first["score"] >= cfg.lime_min_score)


def test_index_page_lists_every_row_with_prediction_label_and_files():
    from tasks.explain_page import index_page

    entries = [
        {
            "row_id": 41,
            "rules": ["false_positives", "random"],
            "label": "malignant",
            "prediction": "P(benign) = 0.8",
            "explained": "class benign",
            "files": ["shap/row_41_waterfall.png", "lime/row_41.html"],
            "waterfall": b"\x89PNG-waterfall",
            "comparison": b"\x89PNG-compare",
            "top_k_jaccard": 0.43,
            "top_k_jaccard_chance": 0.12,
            "trusted": False,
            "spearman": 0.86,
            "lime_score": 0.3,
            "top_k": 5,
        },
        {
            "row_id": "a<b",
            "rules": ["requested"],
            "label": "benign",
            "prediction": "P(benign) = 0.1",
            "explained": "class benign",
            "files": ["shap/row_a_b_waterfall.png"],
        },
    ]
    page = index_page(entries, "Local explanations: demo")
    assert page.startswith("<!doctype html>") and "<title>Local explanations: demo" in page
    assert page.count("<section") == 2 and "a&lt;b" in page and "a<b" not in page
    assert "false_positives, random" in page and "P(benign) = 0.8" in page
    assert 'href="lime/row_41.html"' in page and "explanations/lime/row_41.html" in page
    assert page.count("data:image/png;base64,") == 2  # row 41's two figures, embedded
    assert "top-5 overlap (Jaccard) 0.43 against 0.12 by chance" in page and "LIME off" in page
    assert "not to be trusted" in page and "<td>0.30 <b>untrusted</b></td>" in page


@pytest.mark.parametrize("task", list(CASES))
def test_values_are_filed_under_the_ids_of_the_rows_they_explain(cluster, task):
    """Ids out of order (a shuffled split), a sample of them, several partitions: each id's
    values equal TreeSHAP of that id's own row, through every path that computes SHAP."""
    from tasks.treeshap import row_values, shap_interactions, to_dask

    booster, x, y = _model(task)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    shuffled = x.iloc[order].set_axis(pd.Index(rng.permutation(10 * len(x))[: len(x)]))
    classes = ["c0", "c1", "c2"] if task == "multiclass" else []
    idx = explain_sample(y.to_numpy()[order], task, 60, seed=2)
    sample = shuffled.iloc[idx]
    assert not sample.index.is_monotonic_increasing  # the case that sorting would break
    contribs = shap_values(cluster.client, booster, to_dask(sample, 3))
    table = shap_frame(contribs, sample.index.to_numpy(), list(x.columns), classes)
    reference = booster.predict(xgb.DMatrix(x.iloc[order[idx]]), pred_contribs=True)
    for i, row_id in enumerate(sample.index[::7]):
        expected = reference[i * 7]
        got = table[table.row_id == row_id]
        if task == "multiclass":
            for k, name in enumerate(classes):
                mine = got[got["class"] == name]
                np.testing.assert_allclose(
                    mine[list(x.columns)].to_numpy()[0], expected[k, :-1], atol=1e-4
                )
                assert mine["base_value"].item() == pytest.approx(expected[k, -1], abs=1e-4)
        else:
            np.testing.assert_allclose(got[list(x.columns)].to_numpy()[0], expected[:-1], atol=1e-4)
    # every row (no sample), still out of order
    everything = shap_values(cluster.client, booster, to_dask(shuffled, 4))
    np.testing.assert_allclose(
        everything, booster.predict(xgb.DMatrix(x.iloc[order]), pred_contribs=True), atol=1e-4
    )
    # interactions of the sample: the mean over exactly those rows
    mean_abs = shap_interactions(cluster.client, booster, to_dask(sample.iloc[:20], 3))
    inter = np.abs(booster.predict(xgb.DMatrix(x.iloc[order[idx[:20]]]), pred_interactions=True))
    np.testing.assert_allclose(
        mean_abs, inter[..., :-1, :-1].reshape(-1, *mean_abs.shape).mean(0), atol=1e-4
    )
    # local rows: each row's values for its explained output
    labels = np.array([1] * 3) if task == "binary" else np.array([2, 0, 1])[:3]
    local = row_values(
        booster.predict(xgb.DMatrix(sample.iloc[[5, 0, 9]]), pred_contribs=True), labels
    )
    ref = reference[[5, 0, 9]]
    np.testing.assert_allclose(
        local, ref if ref.ndim == 2 else ref[np.arange(3), labels], atol=1e-6
    )


def test_error_rules_use_the_runs_decision_threshold():
    from tasks.config import ExplainConfig
    from tasks.row_picking import select_rows

    ids = np.arange(200, 210)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0, 0, 1])
    score = np.array([0.95, 0.85, 0.7, 0.6, 0.88, 0.3, 0.92, 0.1, 0.2, 0.99])
    cfg = ExplainConfig(top_risk=0, errors=10, random_rows=0)
    at_half = select_rows(ids, y, score, "binary", cfg, threshold=0.5)
    assert at_half["false_positives"] == [200, 201, 202, 203]
    at_09 = select_rows(ids, y, score, "binary", cfg, threshold=0.9)
    # at 0.9 only row 200 is predicted positive; rows 204 (0.88) and 205 (0.3) are missed
    assert at_09["false_positives"] == [200]
    assert at_09["false_negatives"] == [205, 204]
