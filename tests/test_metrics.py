from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from tasks.metrics import (
    HEADLINE,
    best_f1_threshold,
    binary_metrics,
    evaluation_metrics,
    multiclass_metrics,
    per_class_metrics,
    regression_metrics,
)


def _binary_case(n=500, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(y * 0.35 + rng.uniform(0, 0.65, n), 0.001, 0.999)


def test_binary_metrics_equal_sklearn_at_the_threshold():
    y, p = _binary_case()
    out = binary_metrics(y, p, threshold=0.7)
    pred = (p >= 0.7).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert out == pytest.approx(
        {
            "accuracy_score": skm.accuracy_score(y, pred),
            "balanced_accuracy_score": skm.balanced_accuracy_score(y, pred),
            "precision_score": skm.precision_score(y, pred),
            "recall_score": skm.recall_score(y, pred),
            "f1_score": skm.f1_score(y, pred),
            "matthews_corrcoef": skm.matthews_corrcoef(y, pred),
            "true_negatives": tn,
            "false_positives": fp,
            "false_negatives": fn,
            "true_positives": tp,
            "example_count": 500,
            "roc_auc": skm.roc_auc_score(y, p),
            "average_precision": skm.average_precision_score(y, p),
            "precision_recall_auc": skm.average_precision_score(y, p),
            "log_loss": skm.log_loss(y, p),
            "brier_score": skm.brier_score_loss(y, p),
        }
    )


def test_tuned_threshold_maximises_f1():
    y, p = _binary_case(seed=3)
    best = best_f1_threshold(y, p)
    brute = max(np.unique(p), key=lambda t: skm.f1_score(y, (p >= t).astype(int)))
    assert skm.f1_score(y, (p >= best).astype(int)) == pytest.approx(
        skm.f1_score(y, (p >= brute).astype(int))
    )
    out = evaluation_metrics("binary", y, p, threshold=0.5, tuned_threshold=best)
    assert out["tuned_threshold"] == best
    assert out["test_tuned_f1_score"] >= out["test_f1_score"]
    assert out["test_roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))


def test_multiclass_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet([1, 1, 1], 300) + np.eye(3)[y] * 0.5
    proba /= proba.sum(1, keepdims=True)
    out = multiclass_metrics(y, proba)
    pred = proba.argmax(1)
    for avg in ("macro", "weighted"):
        assert out[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg))
        assert out[f"precision_{avg}"] == pytest.approx(skm.precision_score(y, pred, average=avg))
        assert out[f"recall_{avg}"] == pytest.approx(skm.recall_score(y, pred, average=avg))
        assert out[f"roc_auc_{avg}"] == pytest.approx(
            skm.roc_auc_score(y, proba, average=avg, multi_class="ovr")
        )
    assert out["balanced_accuracy_score"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert out["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    table = per_class_metrics(y, proba, ["a", "b", "c"])
    assert list(table["class"]) == ["a", "b", "c"] and table["support"].sum() == 300
    assert table.loc[1, "roc_auc"] == pytest.approx(skm.roc_auc_score(y == 1, proba[:, 1]))
    assert table.loc[2, "f1"] == pytest.approx(skm.f1_score(y, pred, average=None)[2])


def test_regression_metrics_equal_sklearn_and_mape_skips_zero_targets():
    rng = np.random.default_rng(2)
    yt, yp = rng.normal(size=200), rng.normal(size=200)
    out = regression_metrics(yt, yp)
    assert out["root_mean_squared_error"] == pytest.approx(skm.root_mean_squared_error(yt, yp))
    assert out["median_absolute_error"] == pytest.approx(skm.median_absolute_error(yt, yp))
    assert out["explained_variance_score"] == pytest.approx(skm.explained_variance_score(yt, yp))
    assert out["max_error"] == pytest.approx(skm.max_error(yt, yp))
    assert out["r2_score"] == pytest.approx(skm.r2_score(yt, yp))
    yt[:50] = 0.0
    out = regression_metrics(yt, yp)
    assert out["mean_absolute_percentage_error"] == pytest.approx(
        skm.mean_absolute_percentage_error(yt[50:], yp[50:])
    )
    assert "mean_absolute_percentage_error" not in regression_metrics(np.zeros(5), np.ones(5))


COMMON_WITH_MLFLOW = {
    "accuracy_score",
    "precision_score",
    "recall_score",
    "f1_score",
    "roc_auc",
    "log_loss",
    "example_count",
}


def _ours_and_mlflows(n_classes: int, ours):
    """Glassbox's metrics and mlflow.models.evaluate's for one XGBoost classifier's test rows."""
    import mlflow
    import pandas as pd
    import xgboost as xgb
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=900,
        n_classes=n_classes,
        n_informative=5,
        weights=[0.6, 0.3][: n_classes - 1],
        random_state=n_classes,
    )
    model = xgb.XGBClassifier(n_estimators=15, max_depth=3).fit(x[:500], y[:500])
    data = pd.DataFrame(x[500:], columns=[f"f{i}" for i in range(x.shape[1])]).assign(label=y[500:])
    with mlflow.start_run():
        uri = mlflow.xgboost.log_model(model, name="m").model_uri
        result = mlflow.models.evaluate(uri, data, targets="label", model_type="classifier")
    proba = model.predict_proba(x[500:])
    return ours(y[500:], proba[:, 1] if n_classes == 2 else proba), result.metrics


@pytest.mark.parametrize(
    ("n_classes", "ours", "also"),
    [
        (2, binary_metrics, {"true_positives", "false_negatives", "precision_recall_auc"}),
        (3, multiclass_metrics, set()),
    ],
)
def test_metrics_equal_mlflow_evaluate_for_the_same_names(client, n_classes, ours, also):
    mine, mlflows = _ours_and_mlflows(n_classes, ours)
    shared = set(mine) & set(mlflows)
    assert COMMON_WITH_MLFLOW | also <= shared
    for name in shared:
        assert mine[name] == pytest.approx(mlflows[name]), name


def test_binary_per_class_table_is_decided_at_the_runs_threshold():
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=2000) < 0.3).astype(int)
    proba = np.clip(y * 0.5 + rng.uniform(0, 0.6, 2000), 0, 1)
    table = per_class_metrics(y, proba, ["neg", "pos"], threshold=0.9).set_index("class")
    scores = binary_metrics(y, proba, threshold=0.9)
    assert table.loc["pos", "precision"] == pytest.approx(scores["precision_score"])
    assert table.loc["pos", "recall"] == pytest.approx(scores["recall_score"])
    assert (
        table.loc["pos", "recall"]
        < per_class_metrics(y, proba, ["neg", "pos"]).set_index("class").loc["pos", "recall"]
    )
    assert (table["threshold"] == 0.9).all()


def test_every_metric_name_list_names_metrics_a_run_logs():
    """The metric names kept in lists elsewhere (what a sweep optimises, the config's choices,
    the promotion table and guardrails, the headline) are names the evaluation logs: a typo in
    one of them would leave a sweep or a gate with a metric no run has."""
    from typing import get_args

    from tasks.config import Metric
    from tasks.promotion import COMPARED, DEFAULT_GUARDRAILS
    from tasks.space import METRICS

    rng = np.random.default_rng(0)
    y3 = rng.integers(0, 3, 300)
    p3 = rng.dirichlet(np.ones(3), 300)
    logged = {
        "binary": evaluation_metrics("binary", *_binary_case(), tuned_threshold=0.4),
        "multiclass": evaluation_metrics("multiclass", y3, p3),
        "regression": evaluation_metrics("regression", rng.normal(size=300), rng.normal(size=300)),
    }
    for task, names in logged.items():
        for listed in (METRICS[task], COMPARED[task], DEFAULT_GUARDRAILS[task]):
            assert {f"test_{n}" for n in listed} <= set(names), (task, listed)
        assert set(HEADLINE[task]) <= set(names), task  # these carry their prefix
    assert set(get_args(Metric)) == {"auto"}.union(*METRICS.values())
