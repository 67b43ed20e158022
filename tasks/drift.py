"""Data drift: fresh data against the champion's training data, feature by feature.

At training time `reference_summary` condenses the training split into what the check needs
(quantile bin edges and shares, a seeded sample, category shares, missing shares) and the summary
travels with the logged model. At retraining time `drift_table` compares fresh data with it:

- numbers: PSI over the reference's quantile bins (missing values a bin of their own) and the
  two-sample Kolmogorov-Smirnov test (scipy) against the reference sample;
- categories: PSI over the category shares and a chi-squared test of the two samples' counts,
  with Cramér's V as its effect size;
- the target: label shares (chi-squared) or values (KS): a change in the base rate.

A feature drifted when its PSI reaches `psi`, or when its test is significant (`p < ks_pvalue`)
with an effect of at least `ks_statistic` (KS D or Cramér's V): with many rows every tiny change is
significant, with few rows a large one may not be. The data drifted when `share` of the features
drifted, or the target did. Pure numpy/scipy/pandas and matplotlib; no Prefect, no MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from scipy import stats

from tasks.config import DriftConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EPS = 1e-4  # the share an empty bin counts as (PSI's log is infinite at 0)
SAMPLE = 1_000  # reference values kept per numeric feature for the KS test
TARGET = "(target)"


def reference_summary(
    features: pd.DataFrame,
    target: pd.Series | None = None,
    *,
    classes: list[str] | None = None,
    bins: int = 10,
    sample: int = SAMPLE,
    seed: int = 0,
) -> dict[str, Any]:
    """What the drift check keeps of the training data (JSON-able, ~20 KB per feature).

    Args:
        features: the model's features as trained on (categoricals as pandas categoricals).
        target: class codes (with `classes`) or values.
        bins: quantile bins per numeric feature.
        sample: reference values kept per numeric feature for the KS test (seeded).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"rows": len(features), "bins": bins, "features": {}}
    for name in features.columns:
        out["features"][str(name)] = _summary(features[name], bins, sample, rng)
    if target is not None:
        values = (
            pd.Series(pd.Categorical.from_codes(np.asarray(target, dtype=int), classes))
            if classes
            else target
        )
        out["target"] = _summary(values, bins, sample, rng)
    return out


def _summary(column: pd.Series, bins: int, sample: int, rng: np.random.Generator) -> dict:
    missing = float(column.isna().mean()) if len(column) else 0.0
    present = column.dropna()
    if isinstance(column.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(column):
        shares = present.astype(str).value_counts(normalize=True)
        return {
            "kind": "category",
            "shares": {str(k): float(v) for k, v in shares.items()},
            "missing": missing,
            "rows": len(column),
        }
    values = present.to_numpy(dtype="float64")
    edges = (
        np.unique(np.quantile(values, np.arange(1, bins) / bins)) if values.size else np.array([])
    )
    kept = rng.choice(values, sample, replace=False) if values.size > sample else values
    return {
        "kind": "number",
        "edges": [float(e) for e in edges],
        "shares": _bin_shares(values, np.asarray(edges)).tolist(),
        "missing": missing,
        "mean": float(values.mean()) if values.size else None,
        "sample": np.sort(kept).tolist(),
    }


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of values in (-inf, e1], (e1, e2], ..., (ek, inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(values.size, 1)


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = EPS) -> float:
    """Population stability index: sum over bins of (actual - expected) * ln(actual / expected),
    shares floored at `eps`. Under 0.1: stable; 0.1-0.2: moderate; above 0.2: a real shift."""
    e = np.maximum(np.asarray(expected, dtype="float64"), eps)
    a = np.maximum(np.asarray(actual, dtype="float64"), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def number_drift(ref: dict[str, Any], column: pd.Series) -> dict[str, float]:
    """PSI (bins + a missing bin), KS statistic and p-value of fresh values against `ref`."""
    values = column.dropna().to_numpy(dtype="float64")
    missing = float(column.isna().mean()) if len(column) else 0.0
    present = 1.0 - missing
    expected = [*(np.asarray(ref["shares"]) * (1 - ref["missing"])), ref["missing"]]
    actual = [*(_bin_shares(values, np.asarray(ref["edges"])) * present), missing]
    out = {"psi": psi(np.asarray(expected), np.asarray(actual))}
    if values.size and ref["sample"]:
        test = stats.ks_2samp(np.asarray(ref["sample"]), values)
        out |= {"statistic": float(test.statistic), "p_value": float(test.pvalue)}
    else:
        out |= {"statistic": np.nan, "p_value": np.nan}
    out |= {"reference_mean": ref.get("mean") or np.nan, "current_mean": _mean(values)}
    return out


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else np.nan


def category_drift(ref: dict[str, Any], column: pd.Series) -> dict[str, float]:
    """PSI over category shares (+ missing), and the chi-squared test of the two samples'
    counts (reference vs fresh: the reference is a sample too) with Cramér's V as its effect
    size; categories new to the reference get `EPS` in the PSI."""
    present = column.dropna().astype(str)
    counts = present.value_counts()
    names = sorted(set(ref["shares"]) | set(counts.index))
    n_missing = int(column.isna().sum())
    observed = np.array([*(counts.get(k, 0) for k in names), n_missing], dtype="float64")
    expected_share = np.array(
        [*(ref["shares"].get(k, 0.0) * (1 - ref["missing"]) for k in names), ref["missing"]]
    )
    n = observed.sum()
    out = {"psi": psi(expected_share, observed / max(n, 1))}
    reference = np.round(expected_share * ref.get("rows", n))
    keep = (reference + observed) > 0
    if n and keep.sum() > 1 and reference.sum():
        both = np.vstack([reference[keep], observed[keep]])
        chi2, p, _, _ = stats.chi2_contingency(both, correction=False)
        out |= {"statistic": float(np.sqrt(chi2 / both.sum())), "p_value": float(p)}
    else:
        out |= {"statistic": np.nan, "p_value": np.nan}
    return out | {"reference_mean": np.nan, "current_mean": np.nan}


@dataclass(frozen=True)
class DriftSummary:
    """The verdict of a drift check."""

    features: int
    drifted: tuple[str, ...]
    share: float
    target_drifted: bool
    drifted_data: bool  # share reached the threshold, or the target drifted

    def describe(self) -> str:
        if not self.drifted_data:
            return f"no drift ({len(self.drifted)} of {self.features} features drifted)"
        parts = []
        if self.drifted:
            shown = ", ".join(self.drifted[:5]) + (", ..." if len(self.drifted) > 5 else "")
            parts.append(f"{len(self.drifted)} of {self.features} features drifted ({shown})")
        if self.target_drifted:
            parts.append("the target's distribution changed")
        return "data drifted: " + "; ".join(parts)


def drift_table(
    reference: dict[str, Any],
    features: pd.DataFrame,
    target: pd.Series | None,
    cfg: DriftConfig,
    *,
    classes: list[str] | None = None,
) -> pd.DataFrame:
    """One row per feature (and the target): kind, PSI, test statistic and p-value, means,
    drifted. Features only one side has are listed as `added` or `removed` and count as drifted.
    """
    rows = []
    current = {str(c): features[c] for c in features.columns}
    if target is not None and "target" in reference:
        values = (
            pd.Series(pd.Categorical.from_codes(np.asarray(target, dtype=int), classes))
            if classes
            else target
        )
        current[TARGET] = values
    entries = {
        **reference["features"],
        **({TARGET: reference["target"]} if TARGET in current else {}),
    }
    for name, ref in entries.items():
        if name not in current:
            rows.append({"feature": name, "kind": "removed", "psi": np.nan, "drifted": True})
            continue
        kind = ref["kind"]
        measured = (number_drift if kind == "number" else category_drift)(ref, current[name])
        test = "ks" if kind == "number" else "chi2"
        significant = measured["p_value"] < cfg.ks_pvalue
        if name == TARGET:  # a base-rate change matters however small its effect size
            drifted = bool(significant) or measured["psi"] >= cfg.psi
        else:
            drifted = measured["psi"] >= cfg.psi or bool(
                significant and measured["statistic"] >= cfg.ks_statistic
            )
        rows.append({"feature": name, "kind": kind, "test": test, **measured, "drifted": drifted})
    for name in current:
        if name not in entries:
            rows.append({"feature": name, "kind": "added", "psi": np.nan, "drifted": True})
    columns = [
        "feature",
        "kind",
        "psi",
        "test",
        "statistic",
        "p_value",
        "reference_mean",
        "current_mean",
        "drifted",
    ]
    table = pd.DataFrame(rows).reindex(columns=columns)
    table["drifted"] = table["drifted"].astype(bool)
    return table


def summarize(table: pd.DataFrame, cfg: DriftConfig) -> DriftSummary:
    """The share of drifted features (the target apart) and the data's verdict."""
    feats = table[table["feature"] != TARGET]
    drifted = feats.loc[feats["drifted"]].sort_values("psi", ascending=False, na_position="first")
    share = len(drifted) / max(len(feats), 1)
    target = bool(table.loc[table["feature"] == TARGET, "drifted"].any())
    return DriftSummary(
        features=len(feats),
        drifted=tuple(drifted["feature"]),
        share=share,
        target_drifted=target,
        drifted_data=share >= cfg.share or target,
    )


def drift_metrics(summary: DriftSummary, table: pd.DataFrame) -> dict[str, float]:
    """Stable metric names for the MLflow run (runs compare on them)."""
    feats = table[table["feature"] != TARGET]
    return {
        "drift_share": summary.share,
        "drift_features_drifted": float(len(summary.drifted)),
        "drift_max_psi": float(np.nanmax(feats["psi"])) if feats["psi"].notna().any() else 0.0,
        "drift_target": float(summary.target_drifted),
        "drift_detected": float(summary.drifted_data),
    }


def drift_figure(
    table: pd.DataFrame, cfg: DriftConfig, summary: DriftSummary, top_k: int = 20
) -> Figure:
    """PSI and the test's effect size per feature (the most drifted first), thresholds drawn,
    drifted features in red."""
    from matplotlib.figure import Figure

    shown = table[table["kind"].isin(["number", "category"])]
    shown = shown.sort_values("psi", ascending=False).head(top_k).iloc[::-1]
    fig = Figure(figsize=(11, 0.32 * len(shown) + 2.2), layout="constrained")
    ax_psi, ax_stat = fig.subplots(1, 2, sharey=True)
    colors = ["#c0392b" if d else "#7f8c8d" for d in shown["drifted"]]
    labels = [
        "target (base rate: p-value only)"
        if f == TARGET
        else f"{f} ({'KS' if k == 'number' else 'V'})"
        for f, k in zip(shown["feature"], shown["kind"], strict=True)
    ]
    ax_psi.barh(labels, shown["psi"], color=colors)
    ax_psi.axvline(cfg.psi, color="black", ls="--", lw=1, label=f"drifted at PSI {cfg.psi:g}")
    ax_psi.set_xlabel("PSI (reference quantile bins)")
    ax_psi.legend(loc="lower right", fontsize=8)
    ax_stat.barh(labels, shown["statistic"].fillna(0), color=colors)
    ax_stat.axvline(cfg.ks_statistic, color="black", ls="--", lw=1)
    ax_stat.set_xlabel(
        f"KS D (numbers) / Cramér's V (categories); drifted at ≥ {cfg.ks_statistic:g} "
        f"with p < {cfg.ks_pvalue:g}"
    )
    fig.suptitle(f"Fresh data vs the champion's training data: {summary.describe()}", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Prefect task


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(
    reference: dict[str, Any],
    features: pd.DataFrame,
    target: pd.Series,
    classes: list[str],
    cfg: DriftConfig,
    label: str,
) -> dict[str, Any]:
    """Compare fresh data with a model's training data; log the verdict. Returns the table, the
    summary, its metrics and the figure (logged later, into the challenger's run)."""
    table = drift_table(reference, features, target, cfg, classes=classes or None)
    summary = summarize(table, cfg)
    logger = get_run_logger()
    (logger.warning if summary.drifted_data else logger.info)(
        "Drift against %s: %s (max PSI %.3g)",
        label,
        summary.describe(),
        drift_metrics(summary, table)["drift_max_psi"],
    )
    return {
        "table": table,
        "summary": summary,
        "metrics": drift_metrics(summary, table),
        "figure": drift_figure(table, cfg, summary),
    }
