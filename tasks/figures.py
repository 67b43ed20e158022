"""Evaluation figures: pure functions from predictions computed once (and the booster's history
and importances) to matplotlib Figures.

No pyplot and no files: each function builds a `Figure` (no backend, no global registry) that the
evaluate task logs and drops. sklearn's Display objects draw the curves; seaborn the rest, in one
style. Scatter-type figures subsample (seeded) above `max_points`; nothing else does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn import metrics as skm
from sklearn.calibration import CalibrationDisplay

History = dict[str, dict[str, list[float]]]
# Per-round metrics where lower is better (the ones an overfitting point is looked for in).
LOSSES = {"logloss", "mlogloss", "error", "merror", "rmse", "mae"}


@contextmanager
def style() -> Iterator[None]:
    """The one look of every Glassbox figure (applies while the figure is built)."""
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def _figure(
    ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6.0, 4.5)
) -> tuple[Figure, Any]:
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


# One figure at a time per process where figures are drawn beside other work (the Dask
# workers): seaborn's styles and pyplot's current figure are global to the process.
DRAWING = threading.Lock()


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes: the one resolution and cropping every Glassbox figure uses.
    A constrained-layout figure already fits its canvas; cropping it to a tight box would lay
    it out and measure every text twice more (a third of the time of a small figure). Figures
    laid out by hand (shap's) are cropped."""
    import io

    from matplotlib.layout_engine import ConstrainedLayoutEngine

    tight = not isinstance(figure.get_layout_engine(), ConstrainedLayoutEngine)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight" if tight else None)
    return buffer.getvalue()


def _square_heatmap(matrix: pd.DataFrame, title: str, **heatmap: Any) -> Figure:
    """A square seaborn heatmap sized by the number of rows, values written in small ones."""
    with style():
        import seaborn as sns

        side = max(5.0, 0.42 * len(matrix) + 2)
        fig, axes = _figure(size=(side + 1, side))
        # Every name is shown (the side grows with the rows): asking seaborn to thin labels
        # out ("auto") measures each label's extent, half a second on a 20 x 20 matrix.
        heatmap = {"xticklabels": True, "yticklabels": True, **heatmap}
        sns.heatmap(matrix, ax=axes[0, 0], square=True, **heatmap)
        axes[0, 0].set_title(title)
    return fig


def sample_index(n: int, max_points: int, seed: int) -> np.ndarray:
    """Row positions to draw: all of them, or a seeded sample of `max_points`."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


# --------------------------------------------------------------------------------------------
# Training curves


def overfit_round(
    train: list[float], valid: list[float], min_rounds: int = 5, min_rise: float = 0.002
) -> int | None:
    """The round (0-based) of the valid loss's minimum when, for at least `min_rounds` after
    it, the valid loss ends higher (by `min_rise`, relative) while the train loss kept falling;
    else None."""
    best = int(np.argmin(valid))
    rose = valid[-1] > valid[best] * (1 + min_rise)
    if len(valid) - 1 - best < min_rounds or not rose or train[-1] >= train[best]:
        return None
    return best


def loss_curves(history: History, best_iteration: int | None = None) -> Figure:
    """Train vs valid per round, a panel per evaluation metric; best round marked; the point
    where valid turns up while train keeps falling annotated as overfitting."""
    metrics = list(next(iter(history.values())))
    with style():
        fig, axes = _figure(len(metrics), size=(5.5, 4))
        for ax, metric in zip(axes[0], metrics, strict=True):
            for data, values in history.items():
                ax.plot(np.arange(1, len(values[metric]) + 1), values[metric], label=data, lw=1.8)
            if best_iteration is not None:
                ax.axvline(
                    best_iteration + 1,
                    color="0.4",
                    ls="--",
                    lw=1,
                    label=f"best round ({best_iteration + 1})",
                )
            turn = (
                overfit_round(history["train"][metric], history["valid"][metric])
                if metric in LOSSES and {"train", "valid"} <= set(history)
                else None
            )
            if turn is not None:
                y = history["valid"][metric][turn]
                ax.plot([turn + 1], [y], "o", color="firebrick", ms=6)
                ax.annotate(
                    f"overfitting from round {turn + 1}:\nvalid rises, train falls",
                    xy=(turn + 1, y),
                    xytext=(0, 36),
                    textcoords="offset points",
                    ha="center",
                    color="firebrick",
                    arrowprops={"arrowstyle": "->", "color": "firebrick"},
                )
            ax.set(title=f"{metric} per boosting round", xlabel="boosting round", ylabel=metric)
            ax.legend()
    return fig


def score_per_round(
    history: History, task: str, variances: dict[str, float] | None = None
) -> tuple[str, dict[str, np.ndarray]]:
    """Accuracy per round (1 - error) for classifiers, R² (1 - MSE / variance) for regression."""
    if task == "regression":
        assert variances, "R² needs each data set's target variance"
        return "R²", {d: 1 - np.square(ms["rmse"]) / variances[d] for d, ms in history.items()}
    key = "error" if task == "binary" else "merror"
    return "accuracy", {d: 1 - np.asarray(ms[key]) for d, ms in history.items()}


def metric_curve(
    history: History, task: str, target: float, variances: dict[str, float] | None = None
) -> Figure:
    """Accuracy (or R²) per round with a target line and the round where valid first reaches it."""
    name, curves = score_per_round(history, task, variances)
    with style():
        fig, axes = _figure(size=(7, 4.5))
        ax = axes[0, 0]
        for data, values in curves.items():
            ax.plot(np.arange(1, len(values) + 1), values, label=data, lw=1.8)
        ax.axhline(target, color="firebrick", ls="--", lw=1, label=f"target {target:g}")
        reference = curves.get("valid", next(iter(curves.values())))
        reached = np.flatnonzero(reference >= target)
        if reached.size:
            first = int(reached[0]) + 1
            ax.axvline(first, color="firebrick", ls=":", lw=1)
            ax.annotate(
                f"valid reaches {target:g} at round {first}",
                xy=(first, target),
                xytext=(8, -18),
                textcoords="offset points",
                color="firebrick",
            )
        else:
            ax.annotate(
                f"valid does not reach {target:g} (best {reference.max():.3g})",
                xy=(0.02, 0.95),
                xycoords="axes fraction",
                va="top",
                color="firebrick",
            )
        ax.set(title=f"{name} per boosting round", xlabel="boosting round", ylabel=name)
        ax.legend(loc="lower right")
    return fig


# --------------------------------------------------------------------------------------------
# Classification


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], threshold: float | None = None
) -> Figure:
    """Counts and row-normalised (recall per class), with class names; binary models say at
    which threshold."""
    at = f", threshold {threshold:g}" if threshold is not None else ""
    labels = list(range(len(classes)))
    with style():
        fig, axes = _figure(
            2, size=(max(5.0, 0.6 * len(classes) + 3), max(4.0, 0.5 * len(classes) + 2.5))
        )
        for ax, normalize, fmt, title in [
            (axes[0, 0], None, "d", f"Confusion matrix (counts{at})"),
            (axes[0, 1], "true", ".2f", f"Share of each true class{at}"),
        ]:
            skm.ConfusionMatrixDisplay.from_predictions(
                y_true,
                y_pred,
                labels=labels,
                display_labels=classes,
                normalize=normalize,
                values_format=fmt,
                cmap="Blues",
                colorbar=False,
                ax=ax,
                xticks_rotation=45 if max(map(len, classes)) > 6 else "horizontal",
            )
            ax.set_title(title)
            ax.grid(False)
    return fig


def _one_hot(y_true: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=int)[y_true]


def roc(y_true: np.ndarray, score: np.ndarray, classes: list[str]) -> Figure:
    """ROC: the binary curve, or one-vs-rest per class plus micro and macro averages; AUC in
    the legend; the chance diagonal."""
    with style():
        fig, axes = _figure(size=(6.5, 5.5))
        ax = axes[0, 0]
        if score.ndim == 1:
            skm.RocCurveDisplay.from_predictions(
                y_true, score, name=f"{classes[1]} vs {classes[0]}", ax=ax, plot_chance_level=True
            )
        else:
            onehot = _one_hot(y_true, score.shape[1])
            grid = np.linspace(0, 1, 201)
            tprs = []
            for k, name in enumerate(classes):
                skm.RocCurveDisplay.from_predictions(onehot[:, k], score[:, k], name=name, ax=ax)
                fpr, tpr, _ = skm.roc_curve(onehot[:, k], score[:, k])
                tprs.append(np.interp(grid, fpr, tpr))
            skm.RocCurveDisplay.from_predictions(
                onehot.ravel(),
                score.ravel(),
                name="micro-average",
                ax=ax,
                curve_kwargs={"ls": ":", "lw": 2.5, "color": "deeppink"},
                plot_chance_level=True,
            )
            macro = np.mean(tprs, axis=0)
            macro_auc = skm.roc_auc_score(y_true, score, multi_class="ovr", average="macro")
            ax.plot(
                grid,
                macro,
                ls=":",
                lw=2.5,
                color="navy",
                label=f"macro-average (AUC = {macro_auc:.2f})",
            )
            ax.legend(loc="lower right")
        ax.set(
            title="ROC curve" + ("s, one vs rest" if score.ndim == 2 else ""),
            xlabel="false positive rate",
            ylabel="true positive rate",
        )
    return fig


def precision_recall(y_true: np.ndarray, score: np.ndarray, classes: list[str]) -> Figure:
    """Precision-recall curves (binary, or per class) with the positive rate as baseline."""
    with style():
        fig, axes = _figure(size=(6.5, 5.5))
        ax = axes[0, 0]
        if score.ndim == 1:
            skm.PrecisionRecallDisplay.from_predictions(
                y_true, score, name=classes[1], ax=ax, plot_chance_level=True
            )
        else:
            onehot = _one_hot(y_true, score.shape[1])
            for k, name in enumerate(classes):
                shown = skm.PrecisionRecallDisplay.from_predictions(
                    onehot[:, k], score[:, k], name=name, ax=ax
                )
                ax.axhline(onehot[:, k].mean(), color=shown.line_.get_color(), ls=":", lw=1)
        ax.set(
            title="Precision-recall curve"
            + ("s (dotted: positive rate)" if score.ndim == 2 else ""),
            xlabel="recall",
            ylabel="precision",
            ylim=(0, 1.02),
        )
        ax.legend(loc="best")
    return fig


def calibration(
    y_true: np.ndarray,
    score: np.ndarray,
    classes: list[str],
    n_bins: int = 10,
    uncalibrated: np.ndarray | None = None,
) -> Figure:
    """Reliability curve above a histogram of the predicted probabilities. Binary: P(positive);
    multiclass: the confidence of the predicted class against whether it was right. With
    `uncalibrated` (binary), the booster's own probabilities are drawn too: before and after
    the calibration map."""
    if score.ndim == 1:
        hit, prob, what = y_true, score, f"P({classes[1]})"
    else:
        hit, prob, what = (
            (score.argmax(1) == y_true).astype(int),
            score.max(1),
            "confidence of the predicted class",
        )
    with style():
        fig = Figure(figsize=(6.5, 6.5), layout="constrained")
        top, bottom = fig.subplots(2, 1, height_ratios=[2, 1], sharex=True)
        if uncalibrated is not None:
            CalibrationDisplay.from_predictions(
                hit,
                uncalibrated,
                n_bins=n_bins,
                strategy="uniform",
                name="booster's own (uncalibrated)",
                ax=top,
                linestyle="--",
                color="grey",
            )
        CalibrationDisplay.from_predictions(
            hit,
            prob,
            n_bins=n_bins,
            strategy="uniform",
            name="model" if uncalibrated is None else "calibrated (Platt, valid split)",
            ax=top,
        )
        top.set(title="Calibration (reliability) curve", xlabel="", ylabel="observed frequency")
        bottom.hist(prob, bins=np.linspace(0, 1, 41), color="steelblue")
        if len(prob) and (
            np.histogram(prob, bins=40)[0].max()
            > 20 * max(1, np.median(np.histogram(prob, bins=40)[0]))
        ):
            bottom.set_yscale("log")
        bottom.set(xlabel=f"predicted probability ({what})", ylabel="rows")
    return fig


def threshold_analysis(
    y_true: np.ndarray, proba: np.ndarray, chosen: float | None, default: float = 0.5
) -> Figure:
    """Precision, recall and F1 against the decision threshold; the chosen threshold marked."""
    precision, recall, thresholds = skm.precision_recall_curve(y_true, proba)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    with style():
        fig, axes = _figure(size=(7, 4.5))
        ax = axes[0, 0]
        for values, name in [(precision, "precision"), (recall, "recall"), (f1, "F1")]:
            ax.plot(thresholds, values[:-1], label=name, lw=1.8)
        ax.axvline(default, color="0.5", ls=":", lw=1, label=f"default {default:g}")
        if chosen is not None:
            ax.axvline(
                chosen,
                color="firebrick",
                ls="--",
                lw=1.2,
                label=f"chosen {chosen:.3g} (best F1 on valid)",
            )
        ax.set(
            title="Precision, recall and F1 by threshold (test set)",
            xlabel="decision threshold",
            ylabel="score",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax.legend(loc="lower left")
    return fig


def class_balance(targets: dict[str, np.ndarray], classes: list[str]) -> Figure:
    """Share of each class (classification) or the target's distribution (regression), per split."""
    with style():
        import seaborn as sns

        fig, axes = _figure(size=(7, 4.5))
        ax = axes[0, 0]
        if classes:
            rows = [
                {
                    "split": split,
                    "class": classes[k],
                    "share": float(np.mean(y == k)),
                    "rows": int(np.sum(y == k)),
                }
                for split, y in targets.items()
                for k in range(len(classes))
            ]
            frame = pd.DataFrame(rows)
            sns.barplot(frame, x="class", y="share", hue="split", ax=ax)
            for container in ax.containers:
                ax.bar_label(container, fmt="%.3g", fontsize=7, padding=1)
            if frame["share"].min() < 0.02:
                ax.set_yscale("log")
            ax.set(title="Class balance per split", xlabel="class", ylabel="share of rows")
        else:
            for split, y in targets.items():
                sns.kdeplot(y, label=f"{split} (n={len(y)})", ax=ax, fill=True, alpha=0.15)
            ax.set(title="Target distribution per split", xlabel="target", ylabel="density")
            ax.legend()
    return fig


# --------------------------------------------------------------------------------------------
# Features


def importance(scores: dict[str, dict[str, float]], top_k: int) -> Figure:
    """Horizontal bars of the top-k features for each importance type (gain, weight, cover)."""
    with style():
        import seaborn as sns

        fig, axes = _figure(len(scores), size=(4.5, max(3.0, 0.28 * top_k + 1.2)))
        for ax, (kind, values) in zip(axes[0], scores.items(), strict=True):
            top = pd.Series(values, dtype=float).sort_values(ascending=False).head(top_k)
            sns.barplot(
                x=top.to_numpy(), y=top.index.astype(str), ax=ax, color="steelblue", orient="h"
            )
            ax.set(title=f"importance: {kind}", xlabel=kind, ylabel="")
    return fig


def correlation(features: pd.DataFrame, order: list[str] | None, top_k: int) -> Figure:
    """Pearson correlation of the numeric features (the top-k by importance when there are many),
    diverging palette centred at 0."""
    numeric = features.select_dtypes("number")
    columns = [c for c in (order or []) if c in numeric.columns] + [
        c for c in numeric.columns if c not in (order or [])
    ]
    corr = numeric[columns[:top_k]].corr()
    return _square_heatmap(
        corr,
        f"Feature correlation (top {len(corr)} by importance)" if order else "Feature correlation",
        cmap="vlag",
        center=0,
        vmin=-1,
        vmax=1,
        annot=len(corr) <= 12,
        fmt=".2f",
        cbar_kws={"shrink": 0.7, "label": "Pearson r"},
    )


# --------------------------------------------------------------------------------------------
# Regression


def predicted_vs_true(
    y_true: np.ndarray, y_pred: np.ndarray, *, max_points: int, seed: int
) -> Figure:
    """Predicted against true values with a least-squares line (on all rows) and y = x."""
    idx = sample_index(len(y_true), max_points, seed)
    slope, intercept = np.polyfit(y_true, y_pred, 1)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    with style():
        fig, axes = _figure(size=(6, 5.5))
        ax = axes[0, 0]
        ax.scatter(y_true[idx], y_pred[idx], s=10, alpha=0.5, label=_points_label(idx, y_true))
        ax.plot([lo, hi], [lo, hi], color="0.3", ls="--", lw=1, label="ideal: y = x")
        ax.plot(
            [lo, hi],
            [intercept + slope * lo, intercept + slope * hi],
            color="firebrick",
            lw=1.5,
            label=f"fit: y = {slope:.2f}x + {intercept:.3g}",
        )
        ax.set(title="Predicted vs true (test set)", xlabel="true value", ylabel="predicted value")
        ax.legend()
    return fig


def _points_label(idx: np.ndarray, y: np.ndarray) -> str:
    return f"rows ({len(idx)} of {len(y)} shown)" if len(idx) < len(y) else f"rows ({len(y)})"


def residuals(y_true: np.ndarray, y_pred: np.ndarray, *, max_points: int, seed: int) -> Figure:
    """Residual histogram with KDE, and residuals against predicted values with the zero line."""
    resid = y_true - y_pred
    idx = sample_index(len(resid), max_points, seed)
    with style():
        import seaborn as sns

        fig, axes = _figure(2, size=(6, 4.5))
        sns.histplot(resid, kde=True, ax=axes[0, 0], color="steelblue")
        axes[0, 0].axvline(0, color="0.3", ls="--", lw=1)
        axes[0, 0].set(title="Residuals (true - predicted)", xlabel="residual", ylabel="rows")
        ax = axes[0, 1]
        ax.scatter(y_pred[idx], resid[idx], s=10, alpha=0.5, label=_points_label(idx, resid))
        ax.axhline(0, color="firebrick", ls="--", lw=1)
        ax.set(title="Residuals vs predicted", xlabel="predicted value", ylabel="residual")
        ax.legend()
    return fig


def qq(y_true: np.ndarray, y_pred: np.ndarray, *, max_points: int, seed: int) -> Figure:
    """Normal Q-Q plot of the residuals."""
    from scipy import stats

    resid = y_true - y_pred
    (theoretical, ordered), (slope, intercept, _) = stats.probplot(resid, dist="norm")
    idx = sample_index(len(ordered), max_points, seed)
    with style():
        fig, axes = _figure(size=(5.5, 5.5))
        ax: Axes = axes[0, 0]
        ax.scatter(
            theoretical[idx], ordered[idx], s=10, alpha=0.6, label=_points_label(idx, ordered)
        )
        ax.plot(
            theoretical,
            intercept + slope * theoretical,
            color="firebrick",
            lw=1.5,
            label="normal reference",
        )
        ax.set(
            title="Q-Q plot of residuals",
            xlabel="theoretical normal quantiles",
            ylabel="residual quantiles",
        )
        ax.legend()
    return fig
