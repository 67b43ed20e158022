"""The retrain flow under Prefect's test harness, on one MLflow store: a first champion, a worse
challenger kept out, a better one promoted (the old champion kept as @previous), a dry run, drifted
data blocked, a stable batch skipped, manual promote and rollback, and the lock that keeps two
promotions from interleaving."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

pytestmark = pytest.mark.usefixtures("prefect_harness")
NAME = "glassbox-breast_cancer"
WEAK = {"train.num_boost_round": 3, "train.params.max_depth": 1}


def _retrain(store, **overrides):
    from flows.retrain import retrain

    return retrain(preset="default", overrides={**store, "explain.enabled": False, **overrides})


def _aliases(client):
    return {k: str(v) for k, v in client.get_registered_model(NAME).aliases.items()}


@pytest.fixture(scope="module")
def story(store, prefect_harness):
    """Retrains in order: weak first champion, a worse one, a better one."""
    first = _retrain(store, **WEAK)
    worse = _retrain(store, **{"train.num_boost_round": 1, "train.params.max_depth": 1})
    better = _retrain(store)
    return first, worse, better


def test_first_retrain_promotes_and_reports(story, client):
    first = story[0]
    assert first["decision"] == "promoted" and first["champion_version"] is None
    assert "no champion yet" in first["reasons"][0]
    assert first["primary_metric"] == "roc_auc"  # 37% positives: not imbalanced
    files = {f.path for f in client.list_artifacts(first["run_id"], "comparison")}
    assert {
        "comparison/metrics.json",
        "comparison/roc.png",
        "comparison/precision_recall.png",
        "comparison/shap_importance.png",
        "comparison/decision.json",
    } <= files
    assert "comparison/drift.json" not in files  # no champion, no reference to compare with
    tags = client.get_model_version(NAME, "1").tags
    assert tags["glassbox.decision"] == "promoted"
    assert tags["prefect.flow_run_id"] and tags["glassbox.run_id"] == first["run_id"]


def test_a_worse_challenger_is_kept_out_and_the_numbers_are_the_served_models(story, client, store):
    worse = story[1]
    assert worse["decision"] == "champion kept" and worse["champion_version"] == "1"
    assert any(r.startswith("roc_auc") and "not enough" in r for r in worse["reasons"])
    tags = client.get_model_version(NAME, "2").tags
    assert tags["glassbox.decision"] == "champion kept"
    assert float(tags["glassbox.delta.roc_auc"]) < 0
    # the champion's logged scores are those of the registered model on the challenger's
    # test rows as read: recompute them independently
    from flows.config import load_config
    from tasks.data import prepare, split_frame
    from tasks.datasets import load_source

    cfg = load_config("default", store)
    frame, target, name = load_source(cfg.data.source)
    data, info = prepare(frame, cfg.data, default_target=target, name=name)
    test = split_frame(data, info, cfg.split)["test"]
    rows = frame.drop(columns=[target]).loc[test.index]
    proba = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(
        rows, params={"predict_method": "predict_proba"}
    )
    expected = roc_auc_score(test[target], proba[info.classes[1]])
    metrics = client.get_run(worse["run_id"]).data.metrics
    assert metrics["champion_roc_auc"] == pytest.approx(expected)
    assert worse["champion"]["roc_auc"] == pytest.approx(expected)


def test_a_better_challenger_is_promoted_and_the_old_champion_becomes_previous(story, client):
    better = story[2]
    assert better["decision"] == "promoted" and better["champion_version"] == "1"
    assert any("paired bootstrap" in r for r in better["reasons"])
    assert _aliases(client) == {"champion": "3", "challenger": "3", "previous": "1"}
    from tasks import tracking

    events = tracking.history(NAME)
    assert [(e["version"], e["against"], e["decision"]) for e in events] == [
        ("1", None, "promoted"),
        ("2", "1", "champion kept"),
        ("3", "1", "promoted"),
    ]


def test_dry_run_changes_no_alias(story, client, store):
    before = _aliases(client)
    result = _retrain(store, **{"retrain.mode": "dry_run"})
    assert result["decision"].endswith("(dry run)")
    assert _aliases(client) == before
    assert client.get_model_version(NAME, result["challenger_version"]).aliases == []


def test_drifted_data_is_flagged_and_blocks_when_asked(story, client, store):
    shift = {c: 2.0 for c in ("mean radius", "mean texture", "mean area", "worst radius")}
    result = _retrain(
        store,
        **{"data.inject.shift": shift, "retrain.drift.action": "block"},
    )
    assert result["drift"].startswith("data drifted: 4 of 30 features drifted")
    assert not result["promoted"] and result["reasons"][-1].startswith("blocked: data drifted")
    raw = json.loads(
        Path(client.download_artifacts(result["run_id"], "comparison/drift.json")).read_text()
    )
    table = pd.DataFrame(raw["data"], columns=raw["columns"])
    assert set(table.loc[table["drifted"], "feature"]) == set(shift)
    metrics = client.get_run(result["run_id"]).data.metrics
    assert metrics["drift_detected"] == 1.0 and metrics["drift_features_drifted"] == 4.0
    assert _aliases(client)["champion"] == "3"


def test_a_stable_batch_is_skipped_when_asked(story, client, store):
    count = len(client.search_model_versions(f"name = '{NAME}'"))
    result = _retrain(store, **{"retrain.drift.skip_if_stable": True})
    assert result["decision"] == "skipped (no drift)"
    assert len(client.search_model_versions(f"name = '{NAME}'")) == count


def test_promote_goes_through_the_gate_force_says_so_and_rollback_restores(story, client, store):
    from flows.retrain import promote, rollback
    from tasks import tracking

    kept = promote(model=NAME, version="2", overrides=store)
    assert kept["decision"] == "champion kept" and _aliases(client)["champion"] == "3"
    forced = promote(model=NAME, version="2", force=True, overrides=store)
    assert forced["decision"] == "promoted (forced)"
    assert _aliases(client)["champion"] == "2" and _aliases(client)["previous"] == "3"
    rolled = rollback(model=NAME, tracking_uri=store["tracking.uri"])
    assert rolled == {"registered_model": NAME, "champion": "3", "previous": "2"}
    last = tracking.history(NAME)[-1]
    assert last["decision"] == "rollback" and last["version"] == "3"
    # the CLI's listing shows aliases, metrics and the history
    from flows.summaries import versions_text

    text = versions_text(NAME, tracking.model_versions(NAME), tracking.history(NAME))
    assert "@champion" in text and "promoted (forced)" in text and "rollback" in text


def test_the_promotion_lock_admits_one_holder_at_a_time(prefect_harness):
    from tasks.promotion import promotion_lock

    spans: list[tuple[float, float]] = []

    def hold():
        with promotion_lock("lock-test"):
            start = time.monotonic()
            time.sleep(0.5)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    spans.sort()
    assert len(spans) == 3
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_two_promotions_at_once_leave_one_consistent_champion(story, client):
    """Both start from a stale view (champion A); the one that runs second re-reads @champion
    and is judged against the first one's result."""
    from tasks import tracking
    from tasks.promotion import Rule, record

    source = client.get_model_version(NAME, "1")
    name = "race-model"
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, source.source, source.run_id)
    tracking.set_alias(name, "champion", "1")
    scores = {"1": 0.90, "2": 0.95, "3": 0.97}

    def rescore(v):
        time.sleep(0.2)
        return {"roc_auc": scores[v]}, None

    def run(v):
        record(
            name,
            v,
            {"roc_auc": scores[v]},
            ("1", {"roc_auc": 0.90}, None),
            Rule("roc_auc"),
            mode="enabled",
            score_version=rescore,
        )

    threads = [threading.Thread(target=run, args=(v,)) for v in ("2", "3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    assert aliases["champion"] == "3"  # the best, whichever order they ran in
    first, second = tracking.history(name)
    assert first["against"] == "1"
    assert second["against"] == (first["version"] if first["decision"] == "promoted" else "1")
    assert aliases["previous"] == ("2" if first["version"] == "2" else "1")
