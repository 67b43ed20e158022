"""The gate on numbers alone: first champion, floors, improvements, guardrails, noise, modes."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.comparison import metric_value, paired_bootstrap
from tasks.config import RetrainConfig
from tasks.promotion import Rule, decide, primary_metric, resolve_rule

RULE = Rule("average_precision", guardrails={"roc_auc": 0.01})


def test_defaults_per_task():
    assert primary_metric("binary", 0.002) == "average_precision"
    assert primary_metric("binary", 0.4) == "roc_auc"
    assert primary_metric("multiclass") == "log_loss"
    assert primary_metric("regression") == "root_mean_squared_error"
    rule = resolve_rule(RetrainConfig(), "binary", 0.002)
    assert rule.primary == "average_precision" and dict(rule.guardrails) == {
        "roc_auc": 0.01,
        "log_loss": 0.1,
    }
    # the primary metric is never its own guardrail; {} means none
    rule = resolve_rule(RetrainConfig(primary_metric="log_loss", guardrails={}), "binary", 0.4)
    assert rule.primary == "log_loss" and dict(rule.guardrails) == {}


def test_first_champion_and_floor():
    first = decide({"average_precision": 0.7}, None, RULE)
    assert first.promote and first.applied and "no champion yet" in first.reasons[0]
    floored = decide({"average_precision": 0.7}, None, Rule("average_precision", floor=0.8))
    assert not floored.promote and "misses the floor" in floored.reasons[0]
    # lower-is-better floors: log loss must be under it
    assert decide({"log_loss": 0.3}, None, Rule("log_loss", floor=0.4)).promote
    assert not decide({"log_loss": 0.5}, None, Rule("log_loss", floor=0.4)).promote


def test_improvement_directions_and_minimums():
    champ = {"average_precision": 0.70, "roc_auc": 0.95, "log_loss": 0.20}
    better = decide({"average_precision": 0.72, "roc_auc": 0.95, "log_loss": 0.2}, champ, RULE)
    assert better.promote and better.deltas["average_precision"] == pytest.approx(0.02)
    same = decide(dict(champ), champ, RULE)
    assert not same.promote and "not enough" in same.reasons[0]
    worse = decide({**champ, "average_precision": 0.69}, champ, RULE)
    assert not worse.promote and "worse" in worse.reasons[0]
    strict = Rule("average_precision", min_improvement=0.03)
    assert not decide({**champ, "average_precision": 0.72}, champ, strict).promote
    relative = Rule("average_precision", min_relative_improvement=0.05)  # 0.035 needed
    assert not decide({**champ, "average_precision": 0.73}, champ, relative).promote
    assert decide({**champ, "average_precision": 0.74}, champ, relative).promote
    # log loss: smaller is better
    ll = Rule("log_loss")
    assert decide({**champ, "log_loss": 0.15}, champ, ll).promote
    assert not decide({**champ, "log_loss": 0.25}, champ, ll).promote


def test_guardrails_block_a_better_primary():
    champ = {"average_precision": 0.70, "roc_auc": 0.95}
    ok = decide({"average_precision": 0.75, "roc_auc": 0.945}, champ, RULE)  # 0.005 < 0.0095
    assert ok.promote
    bad = decide({"average_precision": 0.75, "roc_auc": 0.93}, champ, RULE)
    assert not bad.promote and any(r.startswith("guardrail roc_auc") for r in bad.reasons)


def test_noise_modes_blocks_and_force():
    champ = {"average_precision": 0.70, "roc_auc": 0.95}
    chall = {"average_precision": 0.72, "roc_auc": 0.95}
    noisy = Rule("average_precision", confidence=0.8)
    assert decide(chall, champ, noisy, win_rate=0.9).promote
    within = decide(chall, champ, noisy, win_rate=0.6)
    assert not within.promote and "within the noise" in within.reasons[-1]
    dry = decide(chall, champ, RULE, mode="dry_run")
    assert dry.promote and not dry.applied and dry.verdict == "would promote (dry run)"
    off = decide(chall, champ, RULE, mode="disabled")
    assert not off.applied and off.verdict == "not promoted (gate disabled)"
    blocked = decide(chall, champ, RULE, blocked="data drifted")
    assert not blocked.promote and blocked.reasons[-1] == "blocked: data drifted"
    forced = decide({**chall, "average_precision": 0.5}, champ, RULE, force=True)
    assert forced.applied and forced.verdict == "promoted (forced)"
    assert any("not enough" in r for r in forced.reasons)  # the record says what it skipped
    with pytest.raises(ValueError, match="no average_precision"):
        decide({"roc_auc": 0.9}, champ, RULE)


def test_paired_bootstrap_tells_a_real_gain_from_noise():
    rng = np.random.default_rng(0)
    n = 20_000
    y = (rng.uniform(size=n) < 0.01).astype(int)
    signal = y * 1.5 + rng.normal(size=n)
    weak = 1 / (1 + np.exp(-(signal + rng.normal(scale=1.5, size=n))))
    strong = 1 / (1 + np.exp(-signal))
    assert paired_bootstrap("binary", "average_precision", y, weak, strong, n=100) > 0.95
    assert paired_bootstrap("binary", "average_precision", y, strong, weak, n=100) < 0.05
    twin = 1 / (1 + np.exp(-(signal + rng.normal(scale=0.05, size=n))))
    rate = paired_bootstrap("binary", "average_precision", y, strong, twin, n=100)
    assert 0.05 < rate < 0.95  # same quality: no confident winner
    # the fast metric path equals the full one
    from tasks.comparison import holdout_scores

    full = holdout_scores("binary", y, strong)
    for name in ("average_precision", "roc_auc", "log_loss", "brier_score"):
        assert metric_value("binary", name, y, strong, 0.5) == pytest.approx(full[name])
