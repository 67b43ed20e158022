from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from tasks.evaluate import loss_curves_figure
from tasks.evaluate import test_metrics as compute_test_metrics


def test_binary_metrics_equal_sklearn_at_the_threshold():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(y * 0.6 + rng.uniform(0, 0.5, 400), 0, 1)
    out = compute_test_metrics("binary", y, p, threshold=0.7)
    pred = (p >= 0.7).astype(int)
    assert out["test_precision"] == pytest.approx(skm.precision_score(y, pred))
    assert out["test_recall"] == pytest.approx(skm.recall_score(y, pred))
    assert out["test_roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert out["test_log_loss"] == pytest.approx(skm.log_loss(y, p))


def test_multiclass_and_regression_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    proba = rng.dirichlet([1, 1, 1], 300)
    y = rng.integers(0, 3, 300)
    out = compute_test_metrics("multiclass", y, proba)
    assert out["test_f1_macro"] == pytest.approx(skm.f1_score(y, proba.argmax(1), average="macro"))
    assert out["test_log_loss"] == pytest.approx(skm.log_loss(y, proba))
    yt, yp = rng.normal(size=200), rng.normal(size=200)
    reg = compute_test_metrics("regression", yt, yp)
    assert reg == pytest.approx(
        {
            "test_rmse": skm.root_mean_squared_error(yt, yp),
            "test_mae": skm.mean_absolute_error(yt, yp),
            "test_r2": skm.r2_score(yt, yp),
        }
    )


def test_loss_curves_have_a_panel_per_metric_with_train_valid_and_best_round():
    history = {
        "train": {"error": [0.3, 0.2, 0.1], "logloss": [0.6, 0.4, 0.3]},
        "valid": {"error": [0.35, 0.3, 0.3], "logloss": [0.62, 0.5, 0.55]},
    }
    fig = loss_curves_figure(history, best_iteration=1)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == [
        "error per boosting round",
        "logloss per boosting round",
    ]
    assert axes[1].get_xlabel() == "boosting round" and axes[1].get_ylabel() == "logloss"
    labels = [t.get_text() for t in axes[1].get_legend().get_texts()]
    assert labels == ["train", "valid", "best round (2)"]
    assert list(axes[1].get_lines()[1].get_ydata()) == [0.62, 0.5, 0.55]
