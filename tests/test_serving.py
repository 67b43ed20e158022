"""The registered model as MLflow's own tools use it: pyfunc on raw rows, `mlflow.models.evaluate`,
and the scoring server on JSON records. Models are logged by `tracking.log_glassbox_model` into a
real sqlite store, trained on the messy data the tests make."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tasks import tracking
from tasks.calibration import Platt
from tasks.config import DataConfig
from tasks.data import prepare
from tasks.serving import ModelCard
from tests.conftest import messy_frame

PLATT = Platt(slope=0.8, intercept=-0.3)
OBJECTIVES = {
    "binary": {"objective": "binary:logistic"},
    "multiclass": {"objective": "multi:softprob", "num_class": 3},
    "regression": {"objective": "reg:squarederror"},
}


def _raw(task: str, tmp_path: Path, n: int = 1500) -> pd.DataFrame:
    """The messy frame as a user reads it back from a CSV file."""
    path = tmp_path / f"{task}.csv"
    messy_frame(n, task, seed=1).to_csv(path, index=False)
    return pd.read_csv(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One registered model per task, logged from a real run in a temp store."""
    import mlflow
    from mlflow import MlflowClient

    from tasks.config import TrackingConfig

    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root}/mlflow.db"
    tracking.configure(TrackingConfig(uri=uri, artifact_root=str(root / "artifacts")))
    client = MlflowClient()
    exp = client.create_experiment("serving", artifact_location=(root / "artifacts").as_uri())
    out = {"uri": uri}
    for task in OBJECTIVES:
        raw = _raw(task, root)
        data, info = prepare(
            raw,
            DataConfig(source="messy.csv", target="target", task=task),
            default_target=None,
            name=task,
        )
        booster = xgb.train(
            {**OBJECTIVES[task], "max_depth": 3},
            xgb.DMatrix(data[info.features], data["target"], enable_categorical=True),
            40,
        )
        path = root / f"{task}.ubj"
        booster.save_model(path)
        run = client.create_run(exp)
        card = ModelCard(
            task=task,
            spec=info.spec,
            classes=info.classes,
            threshold=0.4,
            calibration=PLATT if task == "binary" else None,
        )
        logged = tracking.log_glassbox_model(
            run.info.run_id,
            str(path),
            card,
            raw[[c.name for c in info.spec.columns]].head(3),
        )
        version = tracking.register_model(logged.uri, f"messy-{task}")
        client.set_terminated(run.info.run_id)
        out[task] = {
            "raw": raw,
            "info": info,
            "booster": booster,
            "features": data[info.features],
            "uri": f"models:/messy-{task}/{version}",
            "run_id": run.info.run_id,
            "experiment_id": exp,
        }
    mlflow.set_tracking_uri(uri)
    return out


@pytest.mark.parametrize("task", list(OBJECTIVES))
def test_pyfunc_predicts_raw_rows_in_the_users_terms(models, task):
    import mlflow

    m = models[task]
    model = mlflow.pyfunc.load_model(m["uri"])
    raw = m["raw"].drop(columns="target")
    shuffled = raw.iloc[::-1][list(reversed(raw.columns))]  # rows and columns in another order
    got = model.predict(shuffled)
    score = m["booster"].inplace_predict(m["features"].iloc[::-1])
    if task == "binary":  # the served probabilities are the calibrated ones
        margin = m["booster"].inplace_predict(m["features"].iloc[::-1], predict_type="margin")
        score = PLATT.apply(margin)
    if task == "regression":
        np.testing.assert_allclose(got, score, rtol=1e-6)
    else:
        classes = np.asarray(m["info"].classes, dtype=object)
        codes = score.argmax(1) if task == "multiclass" else (score >= 0.4).astype(int)
        assert got.tolist() == classes[codes].tolist()  # names, binary at the model's threshold
        proba = model.predict(shuffled, params={"predict_method": "predict_proba"})
        assert list(proba.columns) == list(classes)
        expected = score if task == "multiclass" else np.column_stack([1 - score, score])
        np.testing.assert_allclose(proba.to_numpy(), expected, rtol=1e-6)
    # an unseen category and a token in a number column are missing values, not errors
    odd = raw.head(2).assign(city="Atlantis", amount="?")
    assert len(model.predict(odd)) == 2
    with pytest.raises(Exception, match="city"):
        model.predict(raw.drop(columns="city").head(3))


@pytest.mark.parametrize("task", list(OBJECTIVES))
def test_the_model_is_filed_with_its_run(models, task):
    from mlflow import MlflowClient

    client = MlflowClient()
    m = models[task]
    (logged,) = client.search_logged_models(
        experiment_ids=[m["experiment_id"]], filter_string=f"source_run_id = '{m['run_id']}'"
    )
    assert logged.experiment_id == m["experiment_id"]
    # the run page lists the run's models from its outputs
    outputs = client.get_run(m["run_id"]).outputs.model_outputs
    assert [o.model_id for o in outputs] == [logged.model_id]
    version = client.get_model_version(f"messy-{task}", m["uri"].rsplit("/", 1)[1])
    assert version.run_id == m["run_id"]


@pytest.mark.parametrize(
    ("task", "model_type", "metric"),
    [
        ("binary", "classifier", "f1_score"),
        ("multiclass", "classifier", "accuracy_score"),
        ("regression", "regressor", "r2_score"),
    ],
)
def test_mlflow_evaluate_scores_the_registered_model(models, task, model_type, metric):
    import mlflow
    from sklearn import metrics as skm

    m = models[task]
    data = m["raw"].sample(400, random_state=0)
    with mlflow.start_run(experiment_id=m["experiment_id"]):
        result = mlflow.models.evaluate(
            m["uri"],
            data,
            targets="target",
            model_type=model_type,
            # MLflow's own SHAP step fails on pandas 3 string labels (np.issubdtype on a
            # StringDtype); Glassbox logs TreeSHAP itself.
            evaluator_config={"log_model_explainability": False},
        )
    import matplotlib.pyplot as plt

    plt.close("all")  # MLflow's evaluator leaves its pyplot figures open
    predicted = mlflow.pyfunc.load_model(m["uri"]).predict(data.drop(columns="target"))
    if task == "regression":
        expected = skm.r2_score(data["target"], predicted)
    elif task == "binary":
        expected = skm.f1_score(data["target"], predicted, pos_label=m["info"].classes[1])
    else:
        expected = skm.accuracy_score(data["target"], predicted)
    assert result.metrics[metric] == pytest.approx(expected)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scoring_server_answers_json_records_with_strings(models, tmp_path):
    """`mlflow models serve` (MLflow's own server, this environment) on JSON records as a
    client sends them: strings for categories and dates, a token in a number column."""
    m = models["binary"]
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            m["uri"],
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": models["uri"],
            # MLflow execs `uvicorn` by name: the environment's bin folder must be on PATH
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "scoring server did not start in 90 s"
                time.sleep(0.5)
        rows = m["raw"].drop(columns="target").head(4)
        records = json.loads(rows.to_json(orient="records"))
        records[0]["amount"] = "?"
        records[1]["city"] = "Atlantis"

        def post(body: dict) -> dict:
            request = urllib.request.Request(
                f"{base}/invocations",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            return json.loads(urllib.request.urlopen(request, timeout=30).read())

        labels = post({"dataframe_records": records})["predictions"]
        assert len(labels) == 4 and set(labels) <= set(m["info"].classes)
        proba = post({"dataframe_records": records, "params": {"predict_method": "predict_proba"}})[
            "predictions"
        ]
        assert set(proba[0]) == set(m["info"].classes)
        assert sum(proba[2].values()) == pytest.approx(1.0)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_a_parquet_datetime_column_is_served_as_calendar_numbers(models, tmp_path):
    """A datetime column in a Parquet file: the hour of day decides the label, the model reads
    the raw datetime column at serving time and gets it right."""
    import mlflow
    from mlflow import MlflowClient

    rng = np.random.default_rng(0)
    stamps = pd.Series(pd.date_range("2020-01-01", periods=800, freq="13h"))
    frame = pd.DataFrame({"at": stamps, "noise": rng.normal(size=800)})
    frame["label"] = np.where(stamps.dt.hour < 12, "morning", "evening")
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    raw = pd.read_parquet(path)
    data, info = prepare(
        raw, DataConfig(source=str(path), target="label"), default_target=None, name="events"
    )
    assert "at.hour" in info.features and info.spec.columns[0].raw_type == "datetime"
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2},
        xgb.DMatrix(data[info.features], data["label"]),
        20,
    )
    booster.save_model(tmp_path / "events.ubj")
    client = MlflowClient()
    run = client.create_run(models["binary"]["experiment_id"])
    logged = tracking.log_glassbox_model(
        run.info.run_id,
        str(tmp_path / "events.ubj"),
        ModelCard(task="binary", spec=info.spec, classes=info.classes),
        raw[["at", "noise"]].head(3),
    )
    model = mlflow.pyfunc.load_model(
        f"models:/events/{tracking.register_model(logged.uri, 'events')}"
    )
    predicted = model.predict(raw[["noise", "at"]].tail(200))
    assert (predicted == raw["label"].tail(200).to_numpy()).mean() > 0.97
