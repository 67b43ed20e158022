"""`glassbox app` for real: a model trained by the flow on penguin-like data (string categories,
gaps), the page served by the CLI as its own process, driven through `gradio_client` and in
Debian's chromium. Its numbers are checked against the registered model as MLflow serves it."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest

from tests.conftest import GLASSBOX, ROOT, free_port, penguins_like

pytestmark = pytest.mark.app


def _env(store: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": store["tracking.uri"]}


@pytest.fixture(scope="module")
def trained(store, prefect_harness, tmp_path_factory):
    """A model trained and registered by the flow, from a CSV with string categories and gaps."""
    from flows.train import train

    path = tmp_path_factory.mktemp("data") / "penguins.csv"
    penguins_like(400, seed=5).to_csv(path, index=False)
    result = train(
        data_source=str(path),
        target="species",
        num_boost_round=60,
        overrides={**store, "explain.enabled": False},
    )
    return {**result, "csv": path}


@pytest.fixture(scope="module")
def app(trained, store):
    """`glassbox app` (its default model: the data's registered model, latest version) as its
    own process; stopped after the module."""
    port = free_port()
    proc = subprocess.Popen(
        [GLASSBOX, "app", "--port", str(port), "--set", f"data.source={trained['csv']}"],
        cwd=ROOT,
        env=_env(store),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("glassbox app did not answer in 120 s")
    yield {"url": url, "proc": proc, "port": port}
    proc.terminate()
    proc.wait(30)


def test_an_unknown_model_is_one_line_and_no_server(trained, store):
    done = subprocess.run(
        [GLASSBOX, "app", "models:/no-such-model@champion", "--port", str(free_port())],
        cwd=ROOT,
        env=_env(store),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no registered model 'no-such-model'" in lines[0]
    assert "glassbox-penguins" in lines[0]  # the models there are


def test_the_page_listens_on_loopback_only(app):
    sockets = [
        c
        for p in [psutil.Process(app["proc"].pid), *psutil.Process(app["proc"].pid).children(True)]
        for c in p.net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert sockets and all(c.laddr.ip == "127.0.0.1" for c in sockets)


def _flat(form: list[dict], values: dict) -> list:
    """The update endpoint's inputs in form order: a value (and a "missing" box) per input."""
    out = []
    for f in form:
        v = values[f["name"]]
        if f["kind"] == "category":
            out.append("(missing)" if v is None else v)
        else:
            out += [v if v is not None else 0.0, v is None]
    return out


def test_an_edit_moves_the_probability_the_way_its_shap_value_says(app, trained, store):
    """Through the API, as a program would: start from the page's first row, push the most
    important number to the other end of its range, and compare with the registered model."""
    import mlflow
    from gradio_client import Client

    client = Client(app["url"], verbose=False)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    labels = [p["label"] for p in api["/update"]["parameters"]][1:]
    start = client.predict(None, api_name="/start")[-1]
    # The form, in the page's order, from the endpoint's own parameter list.
    form, i = [], 0
    while i < len(labels):
        missing_box = i + 1 < len(labels) and labels[i + 1] == f"{labels[i]} missing"
        kind = "number" if missing_box else "category"
        form.append({"name": labels[i], "kind": kind})
        i += 2 if missing_box else 1
    assert {f["name"] for f in form} == {"island", "bill_length_mm", "bill_depth_mm", "sex", "year"}

    numbers = [f["name"] for f in form if f["kind"] == "number"]
    top = max(numbers, key=lambda n: abs(start["contributions"][n]))
    csv = pd.read_csv(trained["csv"])
    lo, hi = float(csv[top].min()), float(csv[top].max())
    now = start["values"][top]
    edited = dict(start["values"], **{top: lo if abs(now - hi) < abs(now - lo) else hi})
    cls = start["explained"]
    after = client.predict(cls, *_flat(form, edited), api_name="/update")[-1]

    push = after["contributions"][top] - start["contributions"][top]
    moved = after["outputs"][cls] - start["outputs"][cls]
    assert abs(push) > 0.5, "the edit should matter to the model"
    assert np.sign(moved) == np.sign(push)
    # The pushes add up to the change of the class's margin; and the page's probabilities
    # are the registered model's own, for the same raw row.
    total = lambda e: e["base"] + sum(e["contributions"].values())  # noqa: E731
    assert total(after) - total(start) == pytest.approx(
        sum(c["delta"] for c in after["change"]), abs=1e-6
    )
    assert after["change"][0]["column"] == top and after["change"][0]["edited"]
    mlflow.set_tracking_uri(store["tracking.uri"])
    served = mlflow.pyfunc.load_model(trained["model_uri"]).predict(
        pd.DataFrame([edited]), params={"predict_method": "predict_proba"}
    )
    for name, p in after["outputs"].items():
        assert p == pytest.approx(float(served[name].iloc[0]), rel=1e-5)
    lime = client.predict(cls, *_flat(form, edited), api_name="/lime")
    assert "local fit R²" in lime and top in lime
    client.close()


@pytest.mark.browser
def test_a_user_moves_a_slider_and_sees_the_prediction_and_waterfall_change(app, page):
    from playwright.sync_api import expect

    hosts = set()
    page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
    page.goto(app["url"])
    waterfall = page.get_by_test_id("waterfall")
    expect(waterfall).to_contain_text("bill_length_mm")
    expect(page.get_by_text("glassbox-penguins version 1")).to_be_visible()
    expect(page.get_by_text("Starting from test row")).to_be_visible()
    headline = page.get_by_test_id("headline").inner_text()
    drawn = waterfall.inner_text()

    slider = page.get_by_label("range slider for bill_length_mm")
    slider.focus()
    was = slider.input_value()
    page.keyboard.press("End" if float(was) < float(slider.get_attribute("max")) / 1.1 else "Home")
    expect(page.get_by_test_id("headline")).not_to_have_text(headline)
    expect(waterfall).not_to_have_text(drawn)
    expect(page.get_by_test_id("change")).to_contain_text("bill_length_mm (edited)")

    page.get_by_role("button", name="Explain this input with LIME").click()
    expect(page.get_by_test_id("lime")).to_contain_text("local fit R²")

    # Another starting row, picked from those the training run would explain.
    page.get_by_label("rows the training run would explain").click()
    page.get_by_role("option").nth(1).click()
    expect(page.get_by_test_id("change")).not_to_contain_text("(edited)")
    # Nothing was fetched from anywhere but the app itself (no fonts, no telemetry).
    assert hosts == {f"127.0.0.1:{app['port']}"}, hosts


def test_models_are_found_by_alias_version_or_run_and_misses_are_named(trained, store):
    from mlflow import MlflowClient

    from tasks import tracking
    from tasks.config import ConfigError, TrackingConfig

    tracking.configure(TrackingConfig(uri=store["tracking.uri"]))
    name, version = trained["registered_model"], trained["model_version"]
    default = tracking.resolve_model(None, name)
    assert (default.version, default.run_id) == (version, trained["run_id"])
    assert "no @champion yet" in default.note
    by_run = tracking.resolve_model(trained["run_id"], "unused")
    assert (by_run.name, by_run.version) == (name, version)
    tracking.set_alias(name, "champion", version)
    champion = tracking.resolve_model(f"models:/{name}@champion", "unused")
    assert champion.aliases == ("champion",) and not champion.note
    for asked, said in [
        (f"models:/{name}@nope", "has no alias @nope"),
        (f"models:/{name}/99", "has no version 99"),
        ("0123456789abcdef0123456789abcdef", "neither a models:/ URI nor a run id"),
    ]:
        with pytest.raises(ConfigError, match=said):
            tracking.resolve_model(asked, name)
    MlflowClient().delete_registered_model_alias(name, "champion")


def test_a_row_id_that_was_not_kept_is_refused_by_name(app):
    from gradio_client import Client

    client = Client(app["url"], verbose=False)
    with pytest.raises(Exception, match="row 'no-such-row' is not among the"):
        client.predict("no-such-row", None, api_name="/load_row")
    client.close()
