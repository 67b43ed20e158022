"""Drift: PSI against a hand computation, KS against scipy, and the verdicts on data with a known
shift (numbers, categories, missing values, the target's base rate)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tasks.config import DriftConfig
from tasks.drift import (
    TARGET,
    drift_figure,
    drift_table,
    psi,
    reference_summary,
    summarize,
)

CFG = DriftConfig()


def _frame(n: int, seed: int, *, shift: float = 0.0, colors=(0.5, 0.3, 0.2), missing=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, n)
    x[rng.uniform(size=n) < missing] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "z": rng.exponential(2.0, n),
            "color": pd.Categorical(rng.choice(["red", "green", "blue"], n, p=colors)),
        }
    )


def test_psi_is_the_textbook_sum():
    expected = np.array([0.25, 0.25, 0.5])
    actual = np.array([0.2, 0.3, 0.5])
    by_hand = (0.2 - 0.25) * np.log(0.2 / 0.25) + (0.3 - 0.25) * np.log(0.3 / 0.25)
    assert psi(expected, actual) == pytest.approx(by_hand)
    assert psi(expected, expected) == 0.0
    # an empty bin counts as a small share, not as an infinite PSI
    assert np.isfinite(psi(np.array([0.5, 0.5, 0.0]), np.array([0.4, 0.4, 0.2])))


def test_number_psi_uses_reference_deciles_and_ks_equals_scipy():
    ref = _frame(800, 0)  # under the sample size: the whole reference is kept for KS
    cur = _frame(3000, 1, shift=0.3)
    summary = reference_summary(ref, bins=10)
    table = drift_table(summary, cur, None, CFG).set_index("feature")
    ks = stats.ks_2samp(ref["x"], cur["x"])
    assert table.loc["x", "statistic"] == pytest.approx(ks.statistic)
    assert table.loc["x", "p_value"] == pytest.approx(ks.pvalue)
    # PSI by hand over the reference's decile bins
    edges = np.quantile(ref["x"], np.arange(1, 10) / 10)
    e = np.histogram(ref["x"], [-np.inf, *edges, np.inf])[0] / len(ref)
    a = np.histogram(cur["x"], [-np.inf, *edges, np.inf])[0] / len(cur)
    by_hand = np.sum((np.maximum(a, 1e-4) - e) * np.log(np.maximum(a, 1e-4) / e))
    assert table.loc["x", "psi"] == pytest.approx(by_hand, rel=1e-3)
    json.dumps(summary)  # travels with the model as JSON


def test_same_process_is_stable_and_a_shift_is_flagged():
    ref = reference_summary(_frame(20_000, 0))
    same = summarize(drift_table(ref, _frame(20_000, 1), None, CFG), CFG)
    assert same.drifted == () and not same.drifted_data
    shifted = drift_table(ref, _frame(20_000, 2, shift=0.8), None, CFG)
    verdict = summarize(shifted, CFG)
    assert verdict.drifted == ("x",)
    assert verdict.share == pytest.approx(1 / 3)
    assert verdict.drifted_data  # 1 of 3 features >= the 10% share


def test_category_shares_and_missing_values_drift():
    ref = reference_summary(_frame(20_000, 0))
    cur = _frame(20_000, 1, colors=(0.2, 0.3, 0.5), missing=0.3)
    table = drift_table(ref, cur, None, CFG).set_index("feature")
    assert table.loc["color", "drifted"] and table.loc["color", "test"] == "chi2"
    assert table.loc["x", "drifted"]  # 30% missing where there were none
    assert not table.loc["z", "drifted"]
    # the two samples' counts, side by side (the reference is a sample too)
    counts = pd.DataFrame(
        {
            "ref": _frame(20_000, 0)["color"].value_counts(),
            "cur": cur["color"].value_counts(),
        }
    )
    chi2 = stats.chi2_contingency(counts.T.to_numpy(), correction=False)
    assert table.loc["color", "p_value"] == pytest.approx(chi2.pvalue, abs=1e-12)
    assert table.loc["color", "statistic"] == pytest.approx(
        np.sqrt(chi2.statistic / counts.to_numpy().sum())
    )


def test_a_changed_base_rate_is_flagged_even_when_its_psi_is_small():
    rng = np.random.default_rng(0)
    feats = _frame(100_000, 0)
    y_ref = (rng.uniform(size=100_000) < 0.002).astype(int)
    y_cur = (rng.uniform(size=100_000) < 0.006).astype(int)
    ref = reference_summary(feats, pd.Series(y_ref), classes=["ok", "fraud"])
    table = drift_table(ref, _frame(100_000, 1), pd.Series(y_cur), CFG, classes=["ok", "fraud"])
    row = table.set_index("feature").loc[TARGET]
    assert row["psi"] < CFG.psi and row["drifted"]
    verdict = summarize(table, CFG)
    assert verdict.target_drifted and verdict.drifted_data and verdict.drifted == ()
    # the same rate is not
    y_same = (rng.uniform(size=100_000) < 0.002).astype(int)
    same = drift_table(ref, _frame(100_000, 1), pd.Series(y_same), CFG, classes=["ok", "fraud"])
    assert not summarize(same, CFG).target_drifted


def test_added_and_removed_features_count_as_drifted_and_the_figure_says_so():
    ref = reference_summary(_frame(2_000, 0))
    cur = _frame(2_000, 1).drop(columns=["z"]).assign(new=1.0)
    table = drift_table(ref, cur, None, CFG).set_index("feature")
    assert table.loc["z", "kind"] == "removed" and table.loc["new", "kind"] == "added"
    verdict = summarize(table.reset_index(), CFG)
    assert set(verdict.drifted) == {"z", "new"}
    fig = drift_figure(table.reset_index(), CFG, verdict)
    assert "2 of 4 features drifted" in fig._suptitle.get_text()
