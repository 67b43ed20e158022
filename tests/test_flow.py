"""End-to-end flow runs under Prefect's test harness, checked through MlflowClient."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks import tracking
from tasks.config import ConfigError
from tests.conftest import penguins_like
from tests.test_figures import BINARY_FIGURES

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _run(store, preset="default", **kwargs):
    from flows.train import train

    overrides = {**store, **kwargs.pop("overrides", {})}
    return train(preset=preset, overrides=overrides, **kwargs)


def _names(client, run_id, folder):
    return {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, folder)}


def _text(client, run_id, path):
    return Path(client.download_artifacts(run_id, path)).read_text()


def _first_local(client, result):
    local = json.loads(_text(client, result["run_id"], "explanations/local_rows.json"))
    return next(iter(local["rows"].values()))[0]


def _points(client, run_id, key):
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_default_preset_run_holds_what_a_user_looks_for(store, client):
    result = _run(store, num_boost_round=40, overrides={"train.early_stopping_rounds": None})
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    # every config value as a flattened param, plus the effective XGBoost params
    params = run.data.params
    assert params["data.source"] == "builtin:breast_cancer"
    assert params["train.num_boost_round"] == "40"
    assert params["train.params.max_depth"] == "4"
    assert params["split.seed"] == "42"
    assert params["xgb.objective"] == "binary:logistic"
    assert params["data.task_resolved"] == "binary"
    # one point per round, train and valid, for each eval metric
    for key in ("train-logloss", "valid-logloss", "train-error", "valid-error"):
        assert _points(client, result["run_id"], f"curves/{key}") == list(range(40))
    assert run.data.metrics["rounds_trained"] == 40
    metrics = run.data.metrics
    for key in (
        "accuracy_score",
        "balanced_accuracy_score",
        "precision_score",
        "recall_score",
        "f1_score",
        "roc_auc",
        "average_precision",
        "brier_score",
        "tuned_f1_score",
    ):
        assert 0 <= metrics[f"test_{key}"] <= 1, key
    assert metrics["test_roc_auc"] > 0.95
    assert 0 < metrics["tuned_threshold"] < 1
    counts = ("true_negatives", "false_positives", "false_negatives", "true_positives")
    assert sum(metrics[f"test_{k}"] for k in counts) == metrics["test_example_count"] == 114
    assert run.data.metrics["data_train_share_malignant"] == pytest.approx(0.373, abs=0.01)
    # Prefect link and tags
    assert run.data.tags[tracking.PREFECT_RUN_TAG]
    assert run.data.tags["prefect.flow_run_name"]
    # the data set as a run input
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "breast_cancer" and inp.dataset.digest
    assert '"mean radius"' in inp.dataset.schema
    # artifacts: the loss curves and the dataset description
    names = {
        a.path.removeprefix("figures/") for a in client.list_artifacts(result["run_id"], "figures")
    }
    assert names == {f"{n}.png" for n in BINARY_FIGURES}
    shap_files = _names(client, result["run_id"], "explanations/shap")
    assert {"shap_values.parquet", "beeswarm.png", "bar.png"} <= shap_files
    assert len([n for n in shap_files if n.startswith("dependence_")]) == 4
    local = json.loads(
        Path(
            client.download_artifacts(result["run_id"], "explanations/local_rows.json")
        ).read_text()
    )
    assert local["threshold"] == 0.5
    local = local["rows"]
    assert {"top_risk", "false_positives", "false_negatives", "random"} <= set(local)
    for row_id in local["top_risk"]:
        assert {f"row_{row_id}_waterfall.png", f"row_{row_id}_force.html"} <= shap_files
    # LIME for the same rows, compared with SHAP, all reachable from one index page
    ids = {row_id for rows in local.values() for row_id in rows}
    assert _names(client, result["run_id"], "explanations/lime") == {
        f"row_{row_id}.{ext}" for row_id in ids for ext in ("html", "json")
    }
    assert _names(client, result["run_id"], "explanations/shap_vs_lime") == {
        f"row_{row_id}.png" for row_id in ids
    }
    some = next(iter(ids))
    record = json.loads(_text(client, result["run_id"], f"explanations/lime/row_{some}.json"))
    assert record["row_id"] == some and record["seed"] == 0 and record["label"] == 1
    assert len(record["weights"]) == 30 and set(record["weights"]["mean radius"]) == {
        "condition",
        "weight",
    }
    agreement = json.loads(_text(client, result["run_id"], "explanations/shap_vs_lime.json"))
    assert sorted(int(r[0]) for r in agreement["data"]) == sorted(ids)
    table = pd.DataFrame(agreement["data"], columns=agreement["columns"])
    trusted = table[table["trusted"]]
    assert metrics["shap_lime_rows_trusted"] == len(trusted) > 0
    assert metrics["shap_lime_top_k_jaccard_mean"] == pytest.approx(trusted["top_k_jaccard"].mean())
    assert (table["top_k"] == 5).all() and (table["top_k_jaccard_chance"] < 0.2).all()
    assert -1 <= metrics["shap_lime_spearman_mean"] <= 1
    index = _text(client, result["run_id"], "explanations/index.html")
    assert all(f"<h2>Row {row_id}</h2>" in index for row_id in ids)
    assert f'href="lime/row_{some}.html"' in index

    values = pd.read_parquet(
        client.download_artifacts(result["run_id"], "explanations/shap/shap_values.parquet")
    )
    assert len(values) == 114 and {"row_id", "base_value", "mean radius"} <= set(values.columns)
    assert values["row_id"].is_unique and values["row_id"].max() < 569  # ids of the input rows
    tables = {a.path for a in client.list_artifacts(result["run_id"], "tables")}
    assert tables == {"tables/per_class_metrics.json", "tables/test_predictions.json"}
    # the model: registered, in the run's own experiment and artifact folder, listed with the
    # run, and MLflow's pyfunc predicts labels by name on raw rows (columns in another order)
    version = client.get_model_version("glassbox-breast_cancer", result["model_version"])
    assert version.run_id == result["run_id"]
    # registered last, once the run has everything: after the explanations' metrics
    history = client.get_metric_history(result["run_id"], "shap_lime_rows")
    assert version.creation_timestamp >= max(m.timestamp for m in history)
    import mlflow
    from sklearn.datasets import load_breast_cancer

    (logged,) = client.search_logged_models(
        experiment_ids=[result["experiment_id"]],
        filter_string=f"source_run_id = '{result['run_id']}'",
    )
    assert [o.model_id for o in run.outputs.model_outputs] == [logged.model_id]  # on its page
    root = Path(store["tracking.artifact_root"]).resolve().as_uri()
    assert logged.artifact_location.startswith(root)
    local = Path(mlflow.artifacts.download_artifacts(result["model_uri"]))
    mlmodel = (local / "MLmodel").read_text()
    assert "python_function" in mlmodel and "signature:" in mlmodel
    assert not list(local.rglob("*.pkl"))  # models from code: nothing to unpickle on load
    assert "xgboost==" in (local / "requirements.txt").read_text()
    bunch = load_breast_cancer(as_frame=True)
    raw = bunch.frame.drop(columns="target").iloc[:, ::-1]
    model = mlflow.pyfunc.load_model(f"models:/glassbox-breast_cancer/{result['model_version']}")
    labels = model.predict(raw)
    truth = bunch.target_names[bunch.target]
    assert set(labels) == {"malignant", "benign"} and (labels == truth).mean() > 0.9
    proba = model.predict(raw, params={"predict_method": "predict_proba"})
    assert list(proba.columns) == ["malignant", "benign"]
    assert ((proba["benign"] >= 0.5) == (labels == "benign")).all()
    example = pd.read_json(local / "input_example.json", orient="split")
    assert model.predict(example).shape == (len(example),)
    # the workspace is cleaned up
    assert not any(Path(store["data.workspace"]).iterdir())
    # the Prefect run's markdown artifact: headline metrics, figure names, where the run is
    markdown = _prefect_markdown(run.data.tags[tracking.PREFECT_RUN_TAG])
    assert f"MLflow run `{result['run_id']}`" in markdown
    assert "| test_roc_auc |" in markdown and "`figures/roc.png`" in markdown
    assert (
        "mlflow ui --backend-store-uri sqlite:///" in markdown and "files in `file://" in markdown
    )


def _prefect_markdown(flow_run_id: str) -> str:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["mlflow-run"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]),
            )
        )
    return max(artifacts, key=lambda a: a.created).data


def test_multiclass_preset(store, client):
    result = _run(store, "wine", num_boost_round=30)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["xgb.num_class"] == "3"
    assert (
        len(_points(client, result["run_id"], "curves/valid-mlogloss"))
        == run.data.metrics["rounds_trained"]
    )
    assert {
        "test_accuracy_score",
        "test_f1_macro",
        "test_f1_weighted",
        "test_roc_auc_macro",
        "test_log_loss",
    } <= set(run.data.metrics)
    assert "tuned_threshold" not in run.data.metrics
    shap_files = _names(client, result["run_id"], "explanations/shap")
    for name in ("class_0", "class_1", "class_2"):
        assert {f"beeswarm_{name}.png", f"bar_{name}.png"} <= shap_files
    assert {"bar_stacked.png", "interactions.png"} <= shap_files  # the preset asks for them
    record = json.loads(
        _text(
            client, result["run_id"], f"explanations/lime/row_{_first_local(client, result)}.json"
        )
    )
    assert record["explained"].startswith("class class_")  # the predicted class
    assert run.data.metrics["data_test_share_class_0"] > 0
    table = json.loads(
        Path(
            client.download_artifacts(result["run_id"], "tables/per_class_metrics.json")
        ).read_text()
    )
    assert table["columns"] == ["class", "precision", "recall", "f1", "support", "roc_auc"]
    assert [row[0] for row in table["data"]] == ["class_0", "class_1", "class_2"]


def test_regression_preset(store, client):
    result = _run(store, "diabetes", num_boost_round=30, learning_rate=0.2)
    run = client.get_run(result["run_id"])
    assert run.data.params["train.params.learning_rate"] == "0.2"
    assert _points(client, result["run_id"], "curves/train-rmse") == _points(
        client, result["run_id"], "curves/valid-mae"
    )
    assert run.data.metrics["test_r2_score"] > 0.2
    assert {
        "test_median_absolute_error",
        "test_mean_absolute_percentage_error",
        "test_max_error",
        "test_explained_variance_score",
    } <= set(run.data.metrics)
    figures = {a.path for a in client.list_artifacts(result["run_id"], "figures")}
    assert {"figures/predicted_vs_true.png", "figures/residuals.png", "figures/qq.png"} <= figures
    assert "figures/roc.png" not in figures
    record = json.loads(
        _text(
            client, result["run_id"], f"explanations/lime/row_{_first_local(client, result)}.json"
        )
    )
    assert record["explained"] == "predicted value" and record["label"] == 0
    assert "interactions.png" in _names(client, result["run_id"], "explanations/shap")


def test_fraud_run_files_shap_values_and_threshold_artifacts_that_recomputation_confirms(
    store, client
):
    """6,000 test rows, 500 explained: the sampled path. Each id's SHAP values equal TreeSHAP
    of that id's row recomputed from the registered model; every artifact that depends on the
    decision threshold uses the run's (0.2, not 0.5)."""
    import numpy as np
    import xgboost as xgb

    from tasks.calibration import Platt
    from tasks.datasets import make_fraud

    result = _run(
        store,
        "fraud",
        num_boost_round=20,
        overrides={
            "data.rows": 30_000,
            "explain.shap_rows": 500,
            "explain.lime": False,
            "evaluate.threshold": 0.2,
        },
    )
    run = client.get_run(result["run_id"])
    assert run.data.metrics["data_train_rows"] == 21_000
    values = pd.read_parquet(
        client.download_artifacts(result["run_id"], "explanations/shap/shap_values.parquet")
    )
    assert len(values) == 500 and not values["row_id"].is_monotonic_increasing
    data = make_fraud(30_000, seed=7)
    features = [c for c in data.columns if c != "Class"]
    booster = _booster(result)
    rows = data.loc[values["row_id"], features]
    # explained in calibrated log-odds: the margin's values through the run's Platt map
    platt = Platt(
        float(run.data.params["calibration.slope"]),
        float(run.data.params["calibration.intercept"]),
    )
    expected = platt.contributions(booster.predict(xgb.DMatrix(rows), pred_contribs=True))
    np.testing.assert_allclose(values[features].to_numpy(), expected[:, :-1], atol=1e-4)
    np.testing.assert_allclose(values["base_value"], expected[:, -1], atol=1e-4)
    # threshold-dependent artifacts at the run's threshold
    metrics = run.data.metrics
    table = json.loads(_text(client, result["run_id"], "tables/per_class_metrics.json"))
    positive = dict(zip(table["columns"], table["data"][1], strict=True))
    assert positive["precision"] == pytest.approx(metrics["test_precision_score"])
    assert positive["recall"] == pytest.approx(metrics["test_recall_score"])
    assert positive["threshold"] == 0.2
    local = json.loads(_text(client, result["run_id"], "explanations/local_rows.json"))
    assert local["threshold"] == 0.2

    def proba(ids):
        return platt.apply(
            booster.predict(xgb.DMatrix(data.loc[ids, features]), output_margin=True)
        )

    picked = local["rows"].get("false_positives", [])
    assert (proba(picked) >= 0.2).all()
    assert len(picked) == min(5, metrics["test_false_positives"])
    missed = local["rows"].get("false_negatives", [])
    assert len(missed) == min(5, metrics["test_false_negatives"])
    assert (proba(missed) < 0.2).all()
    # the served model's probabilities are those calibrated ones
    import mlflow

    served = mlflow.pyfunc.load_model(result["model_uri"]).predict(
        data.loc[missed + picked], params={"predict_method": "predict_proba"}
    )
    np.testing.assert_allclose(served["1"], proba(missed + picked), rtol=1e-6)
    # labels as the file holds them: integers stay integers, decided at the run's threshold
    labels = mlflow.pyfunc.load_model(result["model_uri"]).predict(data.loc[missed + picked])
    assert labels.tolist() == (proba(missed + picked) >= 0.2).astype(int).tolist()
    assert labels.dtype.kind == "i"
    assert metrics["valid_log_loss_calibrated"] <= metrics["valid_log_loss_uncalibrated"]
    assert {"test_log_loss_uncalibrated", "test_brier_score_uncalibrated"} <= set(metrics)
    assert "xgb.scale_pos_weight" not in run.data.params


def _booster(result):
    """The registered model's XGBoost booster, loaded back from MLflow."""
    import mlflow
    import xgboost as xgb

    local = Path(mlflow.artifacts.download_artifacts(result["model_uri"]))
    return xgb.Booster(model_file=str(local / "artifacts" / "model.ubj"))


def test_users_csv_with_string_target_and_categoricals(store, client, tmp_path):
    path = tmp_path / "penguins.csv"
    penguins_like(300).to_csv(path, index=False)
    result = _run(
        store, data_source=str(path), target="species", num_boost_round=60, learning_rate=0.3
    )
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.task_resolved"] == "multiclass"
    info = client.download_artifacts(result["run_id"], "data/dataset_info.json")
    text = Path(info).read_text()
    assert '"Adelie"' in text and '"island"' in text
    mapping = Path(client.download_artifacts(result["run_id"], "data/label_mapping.json"))
    assert json.loads(mapping.read_text()) == {"Adelie": 0, "Chinstrap": 1, "Gentoo": 2}
    assert run.data.metrics["test_accuracy_score"] > 0.8
    # the registered model predicts the raw CSV rows (strings, gaps) as species names
    import mlflow

    model_info = mlflow.models.get_model_info(result["model_uri"])
    assert model_info.metadata["categories"]["island"] == ["Biscoe", "Dream", "Torgersen"]
    raw = pd.read_csv(path)
    predicted = mlflow.pyfunc.load_model(result["model_uri"]).predict(raw)
    assert (predicted == raw["species"]).mean() > 0.8


def test_messy_csv_is_profiled_and_the_decisions_are_logged(store, client, tmp_path):
    from tests.conftest import messy_frame

    path = tmp_path / "churn.csv"
    messy_frame(1500, "binary", seed=3).to_csv(path, index=False)
    result = _run(
        store,
        data_source=str(path),
        target="target",
        num_boost_round=60,
        overrides={"explain.lime": False, "data.columns": {"tenure": "category"}},
    )
    run = client.get_run(result["run_id"])
    assert run.data.params["data.features_used"] == "7"
    assert run.data.params["data.columns_dropped"] == "2"
    profile = json.loads(_text(client, result["run_id"], "data/profile.json"))
    rows = {r[0]: dict(zip(profile["columns"], r, strict=True)) for r in profile["data"]}
    assert rows["name"]["role"] == "dropped" and rows["record"]["role"] == "dropped"
    assert rows["when"]["features"] == "when.year, when.month, when.day_of_year, when.day_of_week"
    tokens = int((pd.read_csv(path)["amount"] == "?").sum())
    assert rows["amount"]["kind"] == "number" and rows["amount"]["made_missing"] == tokens > 0
    assert rows["tenure"]["kind"] == "category"  # the override
    values = pd.read_parquet(
        client.download_artifacts(result["run_id"], "explanations/shap/shap_values.parquet")
    )
    assert {"when.month", "amount", "city"} <= set(values.columns) and "name" not in values
    # the season drives the label: the month is among the top SHAP features
    top = values.drop(columns=["row_id", "base_value"]).abs().mean().nlargest(3).index
    assert "when.month" in top or "when.day_of_year" in top


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.target": "Clas"}, "data.target: 'Clas' is not a column; did you mean 'Class'"),
        ({"data.columns": {"Tme": "drop"}}, "data.columns: 'Tme' is not a"),
        # the data's own validation: one class only once the rows are read
        ({"data.target": "V1", "data.task": "binary"}, "data.task is binary but target 'V1'"),
    ],
)
def test_bad_input_stops_before_any_run_exists_and_leaves_the_store_as_it_was(
    store, client, overrides, message
):
    before = {e.name for e in client.search_experiments()}
    with pytest.raises(ConfigError, match=message):
        _run(
            store,
            "fraud",
            overrides={"data.rows": 2_000, "tracking.experiment": "bad-input", **overrides},
        )
    assert client.get_experiment_by_name("bad-input") is None
    assert {e.name for e in client.search_experiments()} == before
    workspace = Path(store["data.workspace"])
    assert not workspace.exists() or not any(workspace.iterdir())


def test_splits_go_to_an_fsspec_url_and_the_run_equals_one_on_a_local_folder(
    store, client, tmp_path
):
    shared = tmp_path / "shared"
    quick = {"explain.enabled": False}
    local = _run(store, "wine", num_boost_round=20, overrides=quick)
    remote = _run(
        store, "wine", num_boost_round=20, overrides={**quick, "data.workspace": f"file://{shared}"}
    )
    a, b = (client.get_run(r["run_id"]).data.metrics for r in (local, remote))
    test_a = {k: v for k, v in a.items() if k.startswith("test_")}
    assert test_a and test_a == {k: v for k, v in b.items() if k.startswith("test_")}
    assert client.get_run(remote["run_id"]).data.params["data.workspace"] == f"file://{shared}"
    assert shared.is_dir() and list(shared.iterdir()) == []  # the run's splits were removed
    bad = {"data.workspace": "nope://x", "tracking.experiment": "never-made"}
    with pytest.raises(ConfigError, match="^data.workspace: cannot write to nope://x: "):
        _run(store, "wine", num_boost_round=20, overrides=bad)
    assert client.get_experiment_by_name("never-made") is None


def test_bad_config_fails_before_any_run_is_created(store, client):
    with pytest.raises(ConfigError, match="train.params: unknown XGBoost parameter"):
        _run(store, overrides={"train.params.max_dpth": 3, "tracking.experiment": "never-created"})
    assert client.get_experiment_by_name("never-created") is None


def test_an_objective_that_contradicts_the_detected_task_stops_before_anything_starts(
    store, client
):
    with pytest.raises(ConfigError, match="'reg:squarederror' does not fit the task 'binary'"):
        _run(
            store,
            overrides={
                "train.params.objective": "reg:squarederror",
                "tracking.experiment": "objective-check",
            },
        )
    assert client.get_experiment_by_name("objective-check") is None  # nothing started


def test_hostile_labels_categories_and_ids_stay_text_in_every_page(store, client, tmp_path):
    """Class labels and category values that try to close a script, and row ids that slug to the
    same file name: every HTML artifact keeps them as text, and each row has files of its own."""
    from tasks.config import DataConfig, SplitConfig
    from tasks.data import prepare, split_frame

    attack = "</script><script>alert('gbx')</script>"
    frame = penguins_like(240, seed=2)
    frame["species"] = frame["species"].replace({"Gentoo": f"Gentoo{attack}"})
    frame["island"] = frame["island"].replace({"Dream": f"<!--{attack}"})
    frame.insert(0, "id", [f"p{i}" for i in range(len(frame))])
    # two test rows get ids that slug alike (the split does not depend on the ids)
    data, info = prepare(
        frame,
        DataConfig(source="x.csv", target="species", id_column="id"),
        default_target=None,
        name="x",
    )
    first, second = split_frame(data, info, SplitConfig(seed=1))["test"].index[:2]
    frame["id"] = frame["id"].replace({first: "x/1", second: "x_1"})
    path = tmp_path / "hostile.csv"
    frame.to_csv(path, index=False)
    result = _run(
        store,
        data_source=str(path),
        target="species",
        num_boost_round=20,
        overrides={
            "data.id_column": "id",
            "split.seed": 1,
            "explain.row_ids": ["x/1", "x_1"],
            "explain.lime_samples": 500,
        },
    )
    root = Path(client.download_artifacts(result["run_id"], "explanations"))
    pages = list(root.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        text = page.read_text()
        assert "<script>alert('gbx')" not in text, page.name
        assert "<!--</script" not in text, page.name
    lime_pages = [p.read_text() for p in (root / "lime").glob("*.html")]
    assert any("Gentoo\\u003c/script>" in t for t in lime_pages)  # shown, escaped
    # the two ids that slug alike have files of their own, and sections of their own
    waterfalls = {p.name for p in (root / "shap").glob("row_x_1*_waterfall.png")}
    assert len(waterfalls) == 2
    index = (root / "index.html").read_text()
    assert index.count("<h2>Row x/1</h2>") == 1 and index.count("<h2>Row x_1</h2>") == 1


def test_a_wrong_row_id_stops_before_anything_starts_and_registers_nothing(store, client):
    with pytest.raises(ConfigError, match="explain.row_ids: not in the test set: 99999"):
        _run(
            store,
            overrides={
                "explain.row_ids": [99999],
                "tracking.experiment": "wrong-row-id",
                "tracking.model_name": "never-registered",
            },
        )
    assert client.get_experiment_by_name("wrong-row-id") is None  # nothing started
    assert client.search_model_versions("name = 'never-registered'") == []


def test_a_run_that_fails_after_training_keeps_the_trained_model(store, client, monkeypatch):
    """The store fills up while the model is logged (the fault injected where the model is
    written): the run ends FAILED with the reason, and the booster it trained is kept."""
    import errno

    import xgboost as xgb

    from tasks import tracking

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tracking, "log_glassbox_model", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _run(
            store,
            num_boost_round=15,
            overrides={"explain.enabled": False, "tracking.experiment": "disk-full"},
        )
    [run] = client.search_runs([client.get_experiment_by_name("disk-full").experiment_id])
    assert run.info.status == "FAILED"
    assert "No space left on device" in run.data.tags["glassbox.failure_reason"]
    [kept] = (Path(store["data.workspace"]) / "kept").glob("*/model.ubj")
    assert kept.parent.name == run.data.tags["prefect.flow_run_id"]
    booster = xgb.Booster(model_file=str(kept))
    assert booster.num_boosted_rounds() == 15
    # With its card it scores raw rows as the registered model would have.
    from sklearn.datasets import load_breast_cancer

    from tasks.serving import ModelCard, predict

    card = ModelCard.from_json((kept.parent / "card.json").read_text())
    rows = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    labels = predict(booster, card, rows)
    assert set(labels) <= {"malignant", "benign"} and len(labels) == len(rows)
