"""Faults, as they happen to users: processes started together, signals, dead processes. Real
`glassbox` processes, real stores, real signals."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import GLASSBOX, ROOT

pytestmark = pytest.mark.faults


def test_four_runs_started_together_into_a_fresh_store_all_finish_with_every_point(tmp_path):
    """Each run starts its own temporary Prefect server and opens the same new sqlite store:
    the first-time migration is done once, under a lock, and the experiment made once."""
    from mlflow import MlflowClient

    from tasks import tracking
    from tasks.config import TrackingConfig

    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL",)}
    rounds = 30
    sets = {
        "tracking.uri": store,
        "tracking.artifact_root": str(tmp_path / "artifacts"),
        "data.workspace": str(tmp_path / "workspace"),
        "train.num_boost_round": rounds,
        "train.early_stopping_rounds": "null",
        "explain.enabled": "false",
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    procs = [
        subprocess.Popen(
            [GLASSBOX, "train", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n\n".join(o[-3000:] for o in outs)

    tracking.configure(TrackingConfig(uri=store))
    client = MlflowClient()
    [exp] = [e for e in client.search_experiments() if e.name == "glassbox-breast_cancer"]
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "curves/valid-logloss")]
        assert sorted(steps) == list(range(rounds))
    versions = client.search_model_versions("name = 'glassbox-breast_cancer'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    assert {v.run_id for v in versions} == {r.info.run_id for r in runs}
