"""Figures: what a person looking at them relies on (titles, labels, curves, annotations)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks import explanation_figures as xfigs
from tasks import figures as figs
from tasks.config import EvaluateConfig
from tasks.data import DatasetInfo
from tasks.evaluate import predictions_table
from tasks.evaluation_figures import WITHOUT_PREDICTIONS, iter_figures, render


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


HISTORY = {
    "train": {
        "error": [0.3, 0.2, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02],
        "logloss": [0.6, 0.4, 0.3, 0.25, 0.2, 0.17, 0.15, 0.13, 0.11],
    },
    "valid": {
        "error": [0.35, 0.3, 0.2, 0.15, 0.12, 0.1, 0.09, 0.08, 0.08],
        "logloss": [0.62, 0.5, 0.45, 0.5, 0.52, 0.55, 0.56, 0.58, 0.6],
    },
}


def test_loss_curves_mark_the_best_round_and_the_overfitting_point():
    fig = figs.loss_curves(HISTORY, best_iteration=2)
    error, logloss = fig.get_axes()
    assert [error.get_title(), logloss.get_title()] == [
        "error per boosting round",
        "logloss per boosting round",
    ]
    assert logloss.get_xlabel() == "boosting round" and logloss.get_ylabel() == "logloss"
    assert _legend(logloss) == ["train", "valid", "best round (3)"]
    assert list(logloss.get_lines()[1].get_ydata()) == HISTORY["valid"]["logloss"]
    assert _texts(logloss) == ["overfitting from round 3:\nvalid rises, train falls"]
    assert _texts(error) == []  # valid error never turns up


def test_overfitting_needs_a_sustained_rise():
    assert (
        figs.overfit_round([5, 4, 3, 2, 1, 0.5, 0.4, 0.3], [5, 4, 3, 3.2, 3.3, 3.4, 3.5, 3.6]) == 2
    )
    assert figs.overfit_round([5, 4, 3, 2, 1], [5, 4, 3, 3.2, 3.3]) is None  # too few rounds
    assert figs.overfit_round([5, 4, 3, 3, 3, 3, 3], [5, 4, 3, 3.2, 3.3, 3.4, 3.5]) is None


def test_metric_curve_shows_the_target_and_the_round_it_is_reached():
    fig = figs.metric_curve(HISTORY, "binary", target=0.9)
    (ax,) = fig.get_axes()
    assert ax.get_title() == "accuracy per boosting round"
    assert _legend(ax) == ["train", "valid", "target 0.9"]
    assert _texts(ax) == ["valid reaches 0.9 at round 6"]  # 1 - 0.1
    fig = figs.metric_curve(HISTORY, "binary", target=0.99)
    assert _texts(fig.get_axes()[0]) == ["valid does not reach 0.99 (best 0.92)"]
    reg = {"train": {"rmse": [2.0, 1.0]}, "valid": {"rmse": [2.0, 1.5]}}
    (ax,) = figs.metric_curve(reg, "regression", 0.5, {"train": 4.0, "valid": 4.0}).get_axes()
    assert ax.get_title() == "R² per boosting round"
    assert list(ax.get_lines()[1].get_ydata()) == pytest.approx([0.0, 1 - 2.25 / 4])


def test_confusion_matrix_counts_and_shares_with_class_names():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    fig = figs.confusion_matrix(y, pred, ["setosa", "versicolor", "virginica"])
    counts, shares = fig.get_axes()
    assert counts.get_title() == "Confusion matrix (counts)"
    assert [t.get_text() for t in counts.get_xticklabels()] == ["setosa", "versicolor", "virginica"]
    assert sum(int(t) for t in _texts(counts)) == 7
    assert _texts(shares)[:3] == ["0.50", "0.50", "0.00"]
    binary = figs.confusion_matrix(y[:4], pred[:4], ["legit", "fraud"], threshold=0.3)
    assert binary.get_axes()[0].get_title() == "Confusion matrix (counts, threshold 0.3)"


def _multiclass(n=300, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k), n) + np.eye(k)[y]
    return y, proba / proba.sum(1, keepdims=True)


def test_roc_one_vs_rest_has_a_curve_per_class_plus_averages_and_chance():
    y, proba = _multiclass()
    (ax,) = figs.roc(y, proba, ["a", "b", "c"]).get_axes()
    labels = _legend(ax)
    assert [lab.split(" (")[0] for lab in labels] == [
        "a",
        "b",
        "c",
        "micro-average",
        "Chance level",
        "macro-average",
    ]
    assert all("AUC = " in lab for lab in labels)
    assert ax.get_title() == "ROC curves, one vs rest"
    (ax,) = figs.roc(y[y < 2], proba[y < 2, 1], ["neg", "pos"]).get_axes()
    assert [lab.split(" (")[0] for lab in _legend(ax)] == ["pos vs neg", "Chance level"]


def test_precision_recall_has_the_positive_rate_as_baseline():
    y, proba = _multiclass()
    (ax,) = figs.precision_recall(y, proba, ["a", "b", "c"]).get_axes()
    baselines = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert sorted(round(line.get_ydata()[0], 3) for line in baselines) == sorted(
        round(float(np.mean(y == k)), 3) for k in range(3)
    )
    (ax,) = figs.precision_recall(y[y < 2], proba[y < 2, 1], ["neg", "pos"]).get_axes()
    assert _legend(ax)[1].startswith("Chance level")


def test_calibration_has_a_reliability_curve_over_a_histogram():
    y, proba = _multiclass()
    top, bottom = figs.calibration(y[y < 2], proba[y < 2, 1], ["neg", "pos"]).get_axes()
    assert top.get_title() == "Calibration (reliability) curve"
    assert "model" in _legend(top) and bottom.get_xlabel() == "predicted probability (P(pos))"
    assert sum(p.get_height() for p in bottom.patches) == (y < 2).sum()
    # a calibrated model: the booster's own curve beside the calibrated one
    raw = proba[y < 2, 1] ** 3
    top, _ = figs.calibration(
        y[y < 2], proba[y < 2, 1], ["neg", "pos"], uncalibrated=raw
    ).get_axes()
    assert _legend(top)[-2:] == [
        "booster's own (uncalibrated)",
        "calibrated (Platt, valid split)",
    ]


def test_threshold_analysis_marks_the_chosen_threshold():
    y, proba = _multiclass()
    (ax,) = figs.threshold_analysis(y[y < 2], proba[y < 2, 1], chosen=0.42).get_axes()
    assert _legend(ax) == [
        "precision",
        "recall",
        "F1",
        "default 0.5",
        "chosen 0.42 (best F1 on valid)",
    ]


def test_importance_and_correlation_show_the_top_features():
    scores = {k: {f"f{i}": float(i + 1) for i in range(30)} for k in ("gain", "weight", "cover")}
    axes = figs.importance(scores, top_k=5).get_axes()
    assert [ax.get_title() for ax in axes] == [
        "importance: gain",
        "importance: weight",
        "importance: cover",
    ]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["f29", "f28", "f27", "f26", "f25"]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 30)), columns=[f"f{i}" for i in range(30)])
    frame["f1"] = frame["f0"] * -1
    ax = figs.correlation(frame, order=["f1", "f0", "f5"], top_k=4).get_axes()[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["f1", "f0", "f5", "f2"]
    assert ax.get_title() == "Feature correlation (top 4 by importance)"
    assert "-1.00" in _texts(ax)  # annotated: f1 = -f0


def test_regression_figures_subsample_scatter_points_only():
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    pred = y + rng.normal(scale=0.3, size=500)
    (ax,) = figs.predicted_vs_true(y, pred, max_points=100, seed=0).get_axes()
    labels = _legend(ax)
    assert labels[0] == "rows (100 of 500 shown)" and labels[1] == "ideal: y = x"
    assert labels[2].startswith("fit: y = ")
    assert len(ax.collections[0].get_offsets()) == 100
    hist, scatter = figs.residuals(y, pred, max_points=1000, seed=0).get_axes()
    assert hist.get_title() == "Residuals (true - predicted)" and len(hist.get_lines()) >= 1  # KDE
    assert scatter.get_title() == "Residuals vs predicted" and _legend(scatter) == ["rows (500)"]
    (ax,) = figs.qq(y, pred, max_points=1000, seed=0).get_axes()
    assert ax.get_title() == "Q-Q plot of residuals"


def test_class_balance_per_split():
    targets = {"train": np.array([0] * 90 + [1] * 10), "test": np.array([0] * 45 + [1] * 5)}
    (ax,) = figs.class_balance(targets, ["legit", "fraud"]).get_axes()
    assert ax.get_title() == "Class balance per split"
    assert len(ax.patches) >= 4
    assert [t.get_text() for t in ax.get_xticklabels()] == ["legit", "fraud"]
    values = np.arange(50.0)
    (ax,) = figs.class_balance({"train": values, "test": values}, []).get_axes()
    assert ax.get_title() == "Target distribution per split"


def _info(task, classes):
    return DatasetInfo(
        name="t", source="x", target="y", task=task, features=["a", "b"], classes=classes
    )


def _evaluation_inputs(task, n=200):
    rng = np.random.default_rng(0)
    if task == "regression":
        y, score = rng.normal(size=n), rng.normal(size=n)
        history = {"train": {"rmse": [1.0, 0.9]}, "valid": {"rmse": [1.0, 0.95]}}
    elif task == "binary":
        y, score = rng.integers(0, 2, n), rng.uniform(size=n)
        history = {"train": {"error": [0.2, 0.1]}, "valid": {"error": [0.2, 0.15]}}
    else:
        y, score = _multiclass(n)
        history = {"train": {"merror": [0.2, 0.1]}, "valid": {"merror": [0.2, 0.15]}}
    kwargs = {
        "history": history,
        "best_iteration": 1,
        "importances": {"gain": {"a": 2.0, "b": 1.0}},
        "features": pd.DataFrame(rng.normal(size=(n, 2)), columns=["a", "b"]),
        "targets": {"train": y, "valid": y, "test": y},
        "tuned_threshold": 0.4 if task == "binary" else None,
    }
    return y, score, kwargs


BINARY_FIGURES = {
    "loss_curves",
    "metric_curve",
    "confusion_matrix",
    "roc",
    "precision_recall",
    "calibration",
    "threshold",
    "importance",
    "correlation",
    "class_balance",
}
MULTICLASS_FIGURES = BINARY_FIGURES - {"threshold"}
REGRESSION_FIGURES = {
    "loss_curves",
    "metric_curve",
    "importance",
    "correlation",
    "predicted_vs_true",
    "residuals",
    "qq",
    "class_balance",
}


@pytest.mark.parametrize(
    ("task", "classes", "expected"),
    [
        ("binary", ["n", "p"], BINARY_FIGURES),
        ("multiclass", ["a", "b", "c"], MULTICLASS_FIGURES),
        ("regression", [], REGRESSION_FIGURES),
    ],
)
def test_each_task_gets_the_figures_that_fit_it(task, classes, expected):
    y, score, kwargs = _evaluation_inputs(task)
    made = dict(iter_figures(_info(task, classes), EvaluateConfig(), y, score, **kwargs))
    assert set(made) == expected
    only = EvaluateConfig(figures=("loss_curves", "qq"))
    chosen = dict(iter_figures(_info(task, classes), only, y, score, **kwargs))
    assert set(chosen) == {"loss_curves", "qq"} & expected


@pytest.mark.parametrize(
    ("task", "classes"),
    [("binary", ["n", "p"]), ("multiclass", ["a", "b", "c"]), ("regression", [])],
)
def test_figures_drawn_before_the_predictions_are_those_drawn_with_them(task, classes):
    """The evaluation draws `WITHOUT_PREDICTIONS` while the test set is predicted."""
    y, score, kwargs = _evaluation_inputs(task)
    predicted = {"tuned_threshold": kwargs.pop("tuned_threshold")}
    info, cfg = _info(task, classes), EvaluateConfig()
    for name in WITHOUT_PREDICTIONS:
        early = render(name, info, cfg, None, None, kwargs)
        assert early is not None and early == render(name, info, cfg, y, score, kwargs, predicted)


def test_predictions_table_keeps_row_ids_and_class_names():
    y = np.array([0, 1, 1, 0])
    table = predictions_table(
        np.array([10, 11, 12, 13]),
        y,
        np.array([0.1, 0.8, 0.3, 0.6]),
        ["legit", "fraud"],
        threshold=0.5,
        rows=10,
        seed=0,
    )
    assert table.to_dict("list") == {
        "row_id": [10, 11, 12, 13],
        "true": ["legit", "fraud", "fraud", "legit"],
        "predicted": ["legit", "fraud", "legit", "fraud"],
        "p_fraud": [0.1, 0.8, 0.3, 0.6],
    }
    sample = predictions_table(
        np.arange(1000), np.zeros(1000), np.ones(1000), [], threshold=0.5, rows=50, seed=1
    )
    assert len(sample) == 50 and list(sample.columns) == ["row_id", "true", "predicted", "residual"]
    assert (sample["residual"] == -1).all()


def test_figures_are_built_one_at_a_time_and_not_kept():
    import gc
    import weakref

    y, score, kwargs = _evaluation_inputs("binary")
    refs = []
    for _, fig in iter_figures(_info("binary", ["n", "p"]), EvaluateConfig(), y, score, **kwargs):
        refs.append(weakref.ref(fig))
        del fig
        gc.collect()
        # memory does not grow with the number of figures: at most this one and the last
        assert sum(r() is not None for r in refs) <= 2
    gc.collect()
    assert len(refs) == 10 and all(r() is None for r in refs)


def _bars(ax) -> list[float]:
    return [p.get_width() for p in ax.patches]


def _shap_vs_lime(lime_weights: list[float], top_k: int, **lime) -> tuple:
    """Row 7's comparison figure over features a-d; its SHAP and LIME axes."""
    fig = xfigs.shap_vs_lime(
        ["a", "b", "c", "d"],
        np.array([2.0, -1.0, 0.1, 0.5]),
        np.array(lime_weights),
        top_k=top_k,
        title="Row 7: SHAP vs LIME",
        shap_unit="SHAP (log-odds)",
        lime_unit="LIME (P(1))",
        **lime,
    )
    assert fig._suptitle.get_text() == "Row 7: SHAP vs LIME"
    return tuple(fig.get_axes())


def _top_down(ax) -> list:
    """The y tick labels from the top bar down."""
    return sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])


def test_shap_vs_lime_puts_each_method_s_top_features_side_by_side():
    shap_ax, lime_ax = _shap_vs_lime([0.0, -0.2, 0.3, 0.01], top_k=2)
    assert [shap_ax.get_title(), lime_ax.get_title()] == ["SHAP: top 2", "LIME: top 2"]
    assert [shap_ax.get_xlabel(), lime_ax.get_xlabel()] == ["SHAP (log-odds)", "LIME (P(1))"]
    shap_labels = {t.get_text(): t.get_fontweight() for t in shap_ax.get_yticklabels()}
    lime_labels = {t.get_text(): t.get_fontweight() for t in lime_ax.get_yticklabels()}
    assert set(shap_labels) == {"a", "b"} and set(lime_labels) == {"c", "b"}
    assert shap_labels["b"] == lime_labels["b"] == "bold"  # in both top-2 lists
    assert shap_labels["a"] == "normal"


def test_shap_vs_lime_labels_lime_s_bars_with_its_conditions_and_fit():
    conditions = ["a <= 1.00", "b > 2.00", "c=red", "0.10 < d <= 0.50"]
    shap_ax, lime_ax = _shap_vs_lime(
        [0.01, -0.3, 0.2, 0.05], top_k=3, lime_conditions=conditions, lime_fit=0.714
    )
    assert lime_ax.get_title() == "LIME: top 3, local fit R² 0.71"
    # largest |weight| on top, each named by LIME's condition; bold: in SHAP's top 3 too
    ordered = _top_down(lime_ax)
    assert [t.get_text() for t in ordered] == ["b > 2.00", "c=red", "0.10 < d <= 0.50"]
    assert [t.get_fontweight() for t in ordered] == ["bold", "normal", "bold"]
    assert sorted(_bars(lime_ax)) == [-0.3, 0.05, 0.2]
    assert [t.get_text() for t in _top_down(shap_ax)] == ["a", "b", "d"]


def test_interaction_heatmap_shows_the_strongest_interactions_off_the_diagonal():
    matrix = np.array([[9.0, 0.1, 0.0], [0.1, 5.0, 2.0], [0.0, 2.0, 1.0]])
    fig = xfigs.interaction_heatmap(matrix, ["a", "b", "c"], top=2)
    heat = fig.get_axes()[0]
    assert heat.get_title() == "SHAP interactions (top 2 features; diagonal blank)"
    assert [t.get_text() for t in heat.get_xticklabels()] == ["b", "c"]
    assert sorted(_texts(heat)) == ["2", "2"]  # the pair (b, c) both ways; diagonal blank
