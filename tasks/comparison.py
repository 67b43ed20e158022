"""Champion vs challenger on the same rows: scores, a metric table, overlaid curves, the models'
reasons side by side (mean |SHAP|).

Pure functions first (numpy, pandas, sklearn, matplotlib); the Prefect tasks at the bottom load the
models through the registry (`models:/<name>/<version>`, as MLflow serves them), score them on the
challenger's test rows as read, and log the report under `comparison/` in the challenger's run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sklearn import metrics as skm

from tasks import tracking
from tasks.config import TaskType
from tasks.metrics import evaluation_metrics
from tasks.preprocess import transform
from tasks.promotion import COMPARED, LOWER_IS_BETTER, better

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tasks.data import Loaded


@dataclass(frozen=True)
class Holdout:
    """The rows both models are scored on: raw rows as read, the truth as codes or values."""

    rows: pd.DataFrame
    y: np.ndarray
    task: TaskType
    classes: list[str]

    @classmethod
    def from_loaded(cls, loaded: Loaded) -> Holdout:
        info = loaded.info
        assert loaded.test_rows is not None
        y = loaded.parts["test"][info.target].to_numpy()
        return cls(loaded.test_rows, y, info.task, list(info.classes))


class NotComparable(ValueError):
    """The champion predicts something else than the challenger (task or classes)."""


def aligned_output(
    proba: pd.DataFrame | np.ndarray, task: TaskType, classes: list[str]
) -> np.ndarray:
    """A served model's output in the holdout's terms: P(classes[1]) (binary), probabilities in
    the holdout's class order (multiclass), or values.

    Raises:
        NotComparable: the model does not know one of the holdout's classes.
    """
    if task == "regression":
        if isinstance(proba, pd.DataFrame):
            raise NotComparable("the champion is a classifier, the challenger a regressor")
        return np.asarray(proba, dtype="float64")
    if not isinstance(proba, pd.DataFrame):
        raise NotComparable("the champion is a regressor, the challenger a classifier")
    missing = [c for c in classes if c not in proba.columns]
    if missing:
        raise NotComparable(
            f"the champion does not know class(es) {', '.join(map(str, missing))} "
            f"(it knows {', '.join(map(str, proba.columns))})"
        )
    if task == "binary":
        return proba[classes[1]].to_numpy(dtype="float64")
    out = proba[classes].to_numpy(dtype="float64")
    return out / out.sum(axis=1, keepdims=True)


def holdout_scores(
    task: TaskType, y: np.ndarray, output: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Every test metric of a model on the holdout, by its plain name (`average_precision`)."""
    scores = evaluation_metrics(task, y, output, threshold=threshold)
    return {k.removeprefix("test_"): v for k, v in scores.items()}


def paired_bootstrap(
    task: TaskType,
    metric: str,
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    thresholds: tuple[float, float] = (0.5, 0.5),
    n: int = 200,
    seed: int = 0,
) -> float:
    """The share of paired bootstrap resamples of the rows (the same rows for both models) in
    which the challenger beats the champion on `metric`; ties count half. Resamples where the
    metric is undefined (a class missing) are skipped; stratified for classes so that rare
    positives appear in every resample."""
    rng = np.random.default_rng(seed)
    strata = (
        [np.flatnonzero(y == k) for k in np.unique(y)]
        if task != "regression"
        else [np.arange(len(y))]
    )
    wins = 0.0
    counted = 0
    for _ in range(n):
        rows = np.concatenate([rng.choice(s, len(s)) for s in strata])
        yb = y[rows]
        try:
            old = metric_value(task, metric, yb, champion[rows], thresholds[0])
            new = metric_value(task, metric, yb, challenger[rows], thresholds[1])
        except ValueError:
            continue
        gain = better(metric, new, old)
        wins += 1.0 if gain > 0 else 0.5 if gain == 0 else 0.0
        counted += 1
    return wins / counted if counted else float("nan")


_FAST = {
    "average_precision": lambda y, p, t: skm.average_precision_score(y, p),
    "roc_auc": lambda y, p, t: skm.roc_auc_score(y, p),
    "log_loss": lambda y, p, t: skm.log_loss(
        y, p, labels=[0, 1] if p.ndim == 1 else list(range(p.shape[1]))
    ),
    "brier_score": lambda y, p, t: skm.brier_score_loss(y, p),
    "root_mean_squared_error": lambda y, p, t: skm.root_mean_squared_error(y, p),
    "mean_absolute_error": lambda y, p, t: skm.mean_absolute_error(y, p),
    "r2_score": lambda y, p, t: skm.r2_score(y, p),
}


def metric_value(
    task: TaskType, metric: str, y: np.ndarray, output: np.ndarray, threshold: float
) -> float:
    """One metric of a model's output (the fast path for the gate's usual metrics)."""
    if metric in _FAST and not (
        metric in ("roc_auc", "average_precision", "brier_score") and task == "multiclass"
    ):
        return float(_FAST[metric](y, output, threshold))
    return holdout_scores(task, y, output, threshold)[metric]


def metric_table(
    challenger: dict[str, float], champion: dict[str, float] | None, names: list[str]
) -> pd.DataFrame:
    """`comparison/metrics.json`: per metric, both values, the delta (challenger - champion),
    which direction is better and which model wins."""
    rows = []
    for name in names:
        new = challenger.get(name, np.nan)
        old = np.nan if champion is None else champion.get(name, np.nan)
        gain = better(name, new, old) if np.isfinite(old) and np.isfinite(new) else np.nan
        rows.append(
            {
                "metric": name,
                "champion": old,
                "challenger": new,
                "delta": new - old,
                "better_when": "lower" if name in LOWER_IS_BETTER else "higher",
                "winner": ""
                if not np.isfinite(gain)
                else "challenger"
                if gain > 0
                else "champion"
                if gain < 0
                else "tie",
            }
        )
    return pd.DataFrame(rows)


def compared_metrics(task: TaskType, primary: str, guardrails: list[str]) -> list[str]:
    """The table's metrics: the gate's first, then the task's usual ones."""
    names = [primary, *guardrails, *COMPARED[task]]
    return list(dict.fromkeys(names))


def mean_abs_shap(
    booster: Any, card: Any, rows: pd.DataFrame, *, max_rows: int = 2_000, seed: int = 0
) -> pd.Series:
    """Mean |SHAP| per feature (XGBoost's TreeSHAP, margin units; multi-class: summed over
    classes) on up to `max_rows` rows (seeded), largest first."""
    import xgboost as xgb

    if len(rows) > max_rows:
        rows = rows.sample(max_rows, random_state=seed)
    features = transform(rows, card.spec)
    contribs = booster.predict(xgb.DMatrix(features, enable_categorical=True), pred_contribs=True)
    contribs = np.abs(np.asarray(contribs))
    per_feature = contribs.sum(axis=1) if contribs.ndim == 3 else contribs
    values = per_feature[:, :-1].mean(axis=0)  # the last column is the bias
    return pd.Series(values, index=list(features.columns)).sort_values(ascending=False)


def shap_table(champion: pd.Series | None, challenger: pd.Series, top_k: int = 15) -> pd.DataFrame:
    """Top features by either model's mean |SHAP|, both values and both ranks."""
    both = pd.DataFrame({"challenger": challenger})
    if champion is not None:
        both = both.join(champion.rename("champion"), how="outer")
    else:
        both["champion"] = np.nan
    both["rank_challenger"] = both["challenger"].rank(ascending=False, method="min")
    both["rank_champion"] = both["champion"].rank(ascending=False, method="min")
    order = both[["challenger", "champion"]].max(axis=1).sort_values(ascending=False).index
    table = both.loc[order].head(top_k)
    return table.rename_axis("feature").reset_index()[
        ["feature", "champion", "challenger", "rank_champion", "rank_challenger"]
    ]


def shap_figure(table: pd.DataFrame, labels: tuple[str, str]) -> Figure:
    """Mean |SHAP| of the top features, champion and challenger side by side."""
    from matplotlib.figure import Figure

    shown = table.iloc[::-1]
    fig = Figure(figsize=(9, 0.38 * len(shown) + 1.8), layout="constrained")
    ax = fig.subplots()
    pos = np.arange(len(shown))
    ax.barh(pos + 0.2, shown["champion"].fillna(0), 0.4, label=labels[0], color="#7f8c8d")
    ax.barh(pos - 0.2, shown["challenger"], 0.4, label=labels[1], color="#2980b9")
    ax.set_yticks(pos, shown["feature"])
    ax.set_xlabel("mean |SHAP| on the same test rows (log-odds or margin units)")
    ax.set_title("How the model's reasons changed: mean |SHAP| per feature")
    ax.legend(loc="lower right")
    return fig


def curves_figure(
    task: TaskType, y: np.ndarray, outputs: dict[str, np.ndarray], classes: list[str]
) -> dict[str, Figure]:
    """Overlaid curves on the same rows: ROC and precision-recall (binary), per-class
    one-vs-rest AUC and recall (multi-class), predicted vs true and residuals (regression)."""
    from matplotlib.figure import Figure

    colors = ["#7f8c8d", "#2980b9"]
    figs: dict[str, Figure] = {}
    if task == "binary":
        for name, display, xlabel in (
            ("roc", skm.RocCurveDisplay, "false positive rate"),
            ("precision_recall", skm.PrecisionRecallDisplay, "recall"),
        ):
            fig = Figure(figsize=(6.4, 5.4), layout="constrained")
            ax = fig.subplots()
            for (label, proba), color in zip(outputs.items(), colors, strict=False):
                display.from_predictions(y, proba, name=label, ax=ax, curve_kwargs={"color": color})
            base = float(np.mean(y))
            if name == "precision_recall":
                ax.axhline(base, color="black", ls=":", lw=1, label=f"base rate {base:.3g}")
                ax.legend(loc="upper right", fontsize=8)
            else:
                ax.plot([0, 1], [0, 1], color="black", ls=":", lw=1)
            ax.set_xlabel(xlabel)
            title = "ROC" if name == "roc" else "Precision-recall"
            ax.set_title(f"{title}: champion vs challenger, same {len(y)} test rows")
            figs[name] = fig
    elif task == "multiclass":
        fig = Figure(figsize=(11, 0.4 * len(classes) + 2.4), layout="constrained")
        ax_auc, ax_rec = fig.subplots(1, 2, sharey=True)
        pos = np.arange(len(classes))
        for i, ((label, proba), color) in enumerate(zip(outputs.items(), colors, strict=False)):
            auc = [
                skm.roc_auc_score(y == k, proba[:, k]) if 0 < (y == k).sum() < len(y) else np.nan
                for k in range(len(classes))
            ]
            recall = skm.recall_score(
                y, proba.argmax(1), labels=list(range(len(classes))), average=None, zero_division=0
            )
            ax_auc.barh(pos + 0.2 - 0.4 * i, auc, 0.4, label=label, color=color)
            ax_rec.barh(pos + 0.2 - 0.4 * i, recall, 0.4, label=label, color=color)
        ax_auc.set_yticks(pos, classes)
        ax_auc.set_xlabel("one-vs-rest ROC AUC")
        ax_rec.set_xlabel("recall")
        ax_auc.legend(loc="lower left", fontsize=8)
        fig.suptitle(f"Per class: champion vs challenger, same {len(y)} test rows")
        figs["per_class"] = fig
    else:
        fig = Figure(figsize=(11, 5), layout="constrained")
        ax_pv, ax_res = fig.subplots(1, 2)
        lo, hi = float(np.min(y)), float(np.max(y))
        edges = np.histogram_bin_edges(np.concatenate([p - y for p in outputs.values()]), 40)
        for (label, pred), color in zip(outputs.items(), colors, strict=False):
            rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
            ax_pv.scatter(y, pred, s=8, alpha=0.5, color=color, label=f"{label} (RMSE {rmse:.4g})")
            ax_res.hist(pred - y, bins=edges, alpha=0.5, color=color, label=label)
        ax_pv.plot([lo, hi], [lo, hi], color="black", ls=":", lw=1)
        ax_pv.set_xlabel("true value")
        ax_pv.set_ylabel("predicted value")
        ax_pv.legend(fontsize=8)
        ax_res.axvline(0, color="black", ls=":", lw=1)
        ax_res.set_xlabel("residual (predicted - true)")
        ax_res.legend(fontsize=8)
        fig.suptitle(f"Champion vs challenger, same {len(y)} test rows")
        figs["predicted_vs_true"] = fig
    return figs


# --------------------------------------------------------------------------------------------
# Prefect tasks


@dataclass(frozen=True)
class Scored:
    """A registered version scored on the holdout."""

    version: str
    run_id: str | None
    output: np.ndarray
    scores: dict[str, float]
    importance: pd.Series
    threshold: float = 0.5


def score_model(model: tracking.LoadedModel, holdout: Holdout) -> Scored:
    """Score a loaded model (its pyfunc `predict_proba`, as served) on the holdout."""
    method = "predict" if holdout.task == "regression" else "predict_proba"
    raw = model.pyfunc.predict(holdout.rows, params={"predict_method": method})
    output = aligned_output(raw, holdout.task, holdout.classes)
    scores = holdout_scores(holdout.task, holdout.y, output, model.card.threshold)
    importance = mean_abs_shap(model.booster, model.card, holdout.rows)
    return Scored(model.version, model.run_id, output, scores, importance, model.card.threshold)


@task(name="score-on-holdout", cache_policy=NO_CACHE)
def score_versions(name: str, versions: list[str], holdout: Holdout) -> dict[str, Scored]:
    """Load each version through the registry and score it on the same rows."""
    out = {v: score_model(tracking.load_registered(name, v), holdout) for v in versions}
    for version, scored in out.items():
        names = [k for k in COMPARED[holdout.task] if k in scored.scores]
        shown = ", ".join(f"{k} {scored.scores[k]:.4g}" for k in names)
        get_run_logger().info("%s v%s on %d holdout rows: %s", name, version, len(holdout.y), shown)
    return out


@task(name="log-comparison", cache_policy=NO_CACHE)
def log_comparison(
    run_id: str,
    holdout: Holdout,
    challenger: Scored,
    champion: Scored | None,
    names: list[str],
    decision: dict[str, Any],
    drift: dict[str, Any] | None,
) -> list[str]:
    """The report under `comparison/` in the challenger's run: metric table, curves, mean |SHAP|
    side by side, the drift table and figure, the decision; the champion's scores as
    `champion_<metric>` metrics. Returns the artifact paths."""
    import json

    logged: list[str] = []
    table = metric_table(challenger.scores, champion.scores if champion else None, names)
    tracking.log_table(run_id, table, "comparison/metrics.json")
    logged.append("comparison/metrics.json")
    labels = (
        f"champion v{champion.version}" if champion else "champion (none)",
        f"challenger v{challenger.version}",
    )
    outputs = {labels[1]: challenger.output}
    if champion is not None:
        outputs = {labels[0]: champion.output, **outputs}
        tracking.log_metrics(
            run_id, {f"champion_{k}": v for k, v in champion.scores.items() if k in names}
        )
    for fig_name, fig in curves_figure(holdout.task, holdout.y, outputs, holdout.classes).items():
        logged.append(f"comparison/{fig_name}.png")
        tracking.log_figure(run_id, fig, logged[-1])
    shap = shap_table(champion.importance if champion else None, challenger.importance)
    tracking.log_table(run_id, shap, "comparison/shap_importance.json")
    tracking.log_figure(run_id, shap_figure(shap, labels), "comparison/shap_importance.png")
    logged += ["comparison/shap_importance.json", "comparison/shap_importance.png"]
    if drift is not None:
        tracking.log_table(run_id, drift["table"], "comparison/drift.json")
        tracking.log_figure(run_id, drift["figure"], "comparison/drift.png")
        tracking.log_metrics(run_id, drift["metrics"])
        logged += ["comparison/drift.json", "comparison/drift.png"]
    tracking.log_text(
        run_id, json.dumps(decision, indent=2, default=str), "comparison/decision.json"
    )
    logged.append("comparison/decision.json")
    return logged
