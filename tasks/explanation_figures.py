"""Explanation figures: one row's SHAP and LIME side by side, and the SHAP interaction heatmap.
Pure functions to matplotlib Figures, in the look of the evaluation figures (`tasks.figures`).
shap's own plots (waterfall, beeswarm, dependence) are drawn by shap (`tasks.treeshap`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tasks.figures import _figure, _square_heatmap, style


def _signed_bars(ax: Axes, labels: list[str], values: np.ndarray, bold: set[str]) -> None:
    """Horizontal bars, largest |value| on top, red pushes up, blue pushes down."""
    ax.barh(
        range(len(values))[::-1],
        values,
        color=["#d6604d" if v > 0 else "#4393c3" for v in values],
    )
    ax.set_yticks(range(len(values))[::-1], labels)
    for tick, label in zip(ax.get_yticklabels(), labels, strict=True):
        if label in bold:
            tick.set_fontweight("bold")
    ax.axvline(0, color="0.3", lw=0.8)


def shap_vs_lime(
    features: list[str],
    shap_values: np.ndarray,
    lime_weights: np.ndarray,
    *,
    top_k: int,
    title: str,
    shap_unit: str,
    lime_unit: str,
    lime_conditions: list[str] | None = None,
    lime_fit: float | None = None,
) -> Figure:
    """One row's top-k features by SHAP (left) and by LIME (right); features in both top-k
    lists are in bold. LIME's bars are labelled with its `lime_conditions` (the quartile bin or
    category it states for each feature) and titled with its local fit R² (`lime_fit`) when
    given: the figure then shows all LIME's own chart shows for those features."""
    shap_values, lime_weights = np.asarray(shap_values), np.asarray(lime_weights)
    tops = [np.argsort(-np.abs(v), kind="stable")[:top_k] for v in (shap_values, lime_weights)]
    shared = set(tops[0]) & set(tops[1])
    names = (features, lime_conditions or features)
    fit = "" if lime_fit is None else f", local fit R² {lime_fit:.2f}"
    titles = (f"SHAP: top {len(tops[0])}", f"LIME: top {len(tops[1])}{fit}")
    with style():
        fig, axes = _figure(2, size=(4.6, max(2.5, 0.35 * top_k + 1.4)))
        for ax, values, order, labels, panel, unit in zip(
            axes[0],
            (shap_values, lime_weights),
            tops,
            names,
            titles,
            (shap_unit, lime_unit),
            strict=True,
        ):
            bold = {labels[j] for j in shared}
            _signed_bars(ax, [labels[j] for j in order], values[order], bold)
            ax.set(title=panel, xlabel=unit)
        fig.suptitle(title)
        fig.supxlabel(f"bold: features in both top-{top_k} lists", fontsize="small", color="0.4")
    return fig


def interaction_heatmap(mean_abs: np.ndarray, features: list[str], *, top: int) -> Figure:
    """Mean |SHAP interaction value| between the `top` features with the largest interactions
    (off-diagonal; the diagonal holds main effects and is left blank)."""
    matrix = np.array(mean_abs, dtype=float)
    np.fill_diagonal(matrix, np.nan)
    order = np.argsort(-np.nansum(matrix, axis=1), kind="stable")[:top]
    shown = pd.DataFrame(
        matrix[np.ix_(order, order)],
        index=[features[j] for j in order],
        columns=[features[j] for j in order],
    )
    return _square_heatmap(
        shown,
        f"SHAP interactions (top {len(shown)} features; diagonal blank)",
        cmap="rocket_r",
        annot=len(shown) <= 10,
        fmt=".2g",
        cbar_kws={"shrink": 0.7, "label": "mean |SHAP interaction value|"},
    )
