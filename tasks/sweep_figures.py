"""A sweep's figures, from its trial table: optimisation history, parallel coordinates,
parameter slices and parameter importances. Pure functions to matplotlib Figures, in the look
of every Glassbox figure (`tasks.figures.style`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tasks.config import Dimension
from tasks.figures import _figure, style
from tasks.space import Direction
from tasks.sweep import best_so_far

LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}


def _complete(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["state"] == "complete"]


def optimization_history(table: pd.DataFrame, metric: str, direction: Direction) -> Figure:
    """Each trial's value by trial number, and the best so far as a step line."""
    column = f"valid_{metric}"
    with style():
        fig, axes = _figure(size=(7.5, 4.5))
        ax = axes[0, 0]
        done = _complete(table)
        ax.scatter(done["trial"], done[column], s=22, color="steelblue", label="trial", zorder=3)
        failed = table[table["state"] != "complete"]
        if len(failed):
            low = done[column].min() if len(done) else 0.0
            ax.scatter(
                failed["trial"],
                [low] * len(failed),
                marker="x",
                color="grey",
                label="failed",
                zorder=3,
            )
        values = [None if pd.isna(v) else float(v) for v in table[column]]
        running = best_so_far(values, direction)
        ax.step(
            table["trial"],
            [np.nan if v is None else v for v in running],
            where="post",
            color="firebrick",
            label="best so far",
        )
        ax.set(
            title=f"optimisation history: valid {metric} ({direction})",
            xlabel="trial",
            ylabel=f"valid {metric}",
        )
        ax.legend(loc="best")
    return fig


def _position(values: pd.Series, dim: Dimension) -> tuple[np.ndarray, list[float], list[str]]:
    """Values mapped to [0, 1] on the parameter's own scale, with tick positions and labels."""
    if dim.type == "choice":
        choices = list(dim.values or ())
        span = max(1, len(choices) - 1)
        index = {repr(c): i for i, c in enumerate(choices)}
        pos = np.array([index.get(repr(v), np.nan) / span for v in values], dtype=float)
        return pos, [i / span for i in range(len(choices))], [str(c) for c in choices]
    low, high = float(dim.low), float(dim.high)  # type: ignore[arg-type]
    x = values.astype(float).to_numpy()
    if dim.log:
        pos = (np.log10(x) - math.log10(low)) / (math.log10(high) - math.log10(low))
    else:
        pos = (x - low) / (high - low)
    return pos, [0.0, 1.0], [f"{low:g}", f"{high:g}"]


def parallel_coordinates(
    table: pd.DataFrame, space: dict[str, Dimension], metric: str, direction: Direction
) -> Figure:
    """One vertical axis per parameter (its range, log scale where sampled so) and one for the
    value; a line per complete trial, coloured by its value, the best one drawn thick."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    column = f"valid_{metric}"
    done = _complete(table).reset_index(drop=True)
    names = list(space)
    with style():
        fig, axes = _figure(size=(max(7.0, 1.3 * (len(names) + 1)), 4.8))
        ax = axes[0, 0]
        if done.empty:
            ax.set_title("parallel coordinates: no complete trial")
            return fig
        values = done[column].astype(float).to_numpy()
        lo, hi = float(values.min()), float(values.max())
        norm = Normalize(lo, hi if hi > lo else lo + 1e-12)
        cmap = colormaps["viridis" if direction == "maximize" else "viridis_r"]
        columns = [_position(done[n], space[n]) for n in names]
        value_pos = (values - lo) / (hi - lo) if hi > lo else np.full(len(values), 0.5)
        grid = np.column_stack([c[0] for c in columns] + [value_pos])
        best = int(np.argmax(values) if direction == "maximize" else np.argmin(values))
        for i in np.argsort(values if direction == "maximize" else -values):
            ax.plot(
                range(grid.shape[1]),
                grid[i],
                color=cmap(norm(values[i])),
                lw=3 if i == best else 1.1,
                alpha=1 if i == best else 0.7,
                zorder=4 if i == best else 2,
            )
        for k, (_, ticks, labels) in enumerate(columns):
            ax.axvline(k, color="black", lw=0.8)
            for t, label in zip(ticks, labels, strict=True):
                ax.annotate(
                    label,
                    (k, t),
                    xytext=(3, 0),
                    textcoords="offset points",
                    fontsize=7,
                    va="center",
                    zorder=6,
                    bbox=LABEL_BOX,
                )
        ax.axvline(len(names), color="black", lw=0.8)
        for t in (0.0, 1.0):
            ax.annotate(
                f"{lo + t * (hi - lo):.4g}",
                (len(names), t),
                xytext=(3, 0),
                textcoords="offset points",
                fontsize=7,
                va="center",
                zorder=6,
                bbox=LABEL_BOX,
            )
        labels = [n + (" (log)" if space[n].log else "") for n in names] + [f"valid {metric}"]
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        ax.set_yticks([])
        ax.set_ylim(-0.05, 1.05)
        ax.grid(False)
        ax.set_title(f"parallel coordinates: {len(done)} trials, best drawn thick")
        fig.colorbar(cmap_mappable(cmap, norm), ax=ax, label=f"valid {metric}")
    return fig


def cmap_mappable(cmap: Any, norm: Any) -> Any:
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def slices(table: pd.DataFrame, space: dict[str, Dimension], metric: str) -> Figure:
    """The value against each parameter, one panel per parameter, points coloured by trial
    number (later trials darker: where the search settled)."""
    column = f"valid_{metric}"
    done = _complete(table)
    names = list(space)
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    with style():
        fig, axes = _figure(ncols, nrows, size=(3.4, 3.0))
        for ax in axes.flat[len(names) :]:
            ax.set_visible(False)
        for ax, name in zip(axes.flat, names, strict=False):
            dim = space[name]
            if dim.type == "choice":
                choices = [str(c) for c in dim.values or ()]
                x = [choices.index(str(v)) for v in done[name]]
                ax.set_xticks(range(len(choices)), choices)
            else:
                x = done[name].astype(float).to_list()
                low, high = float(dim.low), float(dim.high)  # type: ignore[arg-type]
                if dim.log:
                    from matplotlib.ticker import NullFormatter

                    ax.set_xscale("log")
                    ax.xaxis.set_minor_formatter(NullFormatter())
                    pad = (high / low) ** 0.03
                    ax.set_xlim(low / pad, high * pad)
                else:
                    pad = 0.03 * (high - low)
                    ax.set_xlim(low - pad, high + pad)
            points = ax.scatter(
                x,
                done[column],
                c=done["trial"],
                cmap="Blues",
                s=18,
                edgecolors="grey",
                linewidths=0.3,
            )
            ax.set(
                title=name, xlabel=name + (" (log)" if dim.log else ""), ylabel=f"valid {metric}"
            )
        if len(done):
            fig.colorbar(points, ax=list(axes.flat), label="trial", shrink=0.6)
        fig.suptitle(f"parameter slices: valid {metric} by parameter value")
    return fig


def importance_bars(scores: dict[str, float], n_trials: int) -> Figure:
    """fANOVA importance of each parameter (shares of the explained variance of the value)."""
    import seaborn as sns

    ordered = pd.Series(scores, dtype=float).sort_values(ascending=False)
    with style():
        fig, axes = _figure(size=(6.0, max(2.5, 0.4 * len(ordered) + 1.2)))
        sns.barplot(
            x=ordered.to_numpy(),
            y=ordered.index.astype(str),
            ax=axes[0, 0],
            color="steelblue",
            orient="h",
        )
        axes[0, 0].set(
            title=f"parameter importances (fANOVA, {n_trials} trials)",
            xlabel="share of the value's variance",
            ylabel="",
        )
    return fig
