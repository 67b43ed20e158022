"""SHAP values from XGBoost's own TreeSHAP (`pred_contribs`), computed on the cluster through
`xgboost.dask` (so on the GPU when `device=cuda`), the rows they are filed under, and shap's plots
of them. Multi-class models are explained per class, on each class's margin (never a class index).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tasks.config import TaskType
from tasks.html_safety import safe_page, shield
from tasks.names import slug

if TYPE_CHECKING:  # workers import this module: no Prefect there
    from tasks.data import DatasetInfo


def explain_sample(y: np.ndarray, task: TaskType, rows: int | str, seed: int) -> np.ndarray:
    """Positions of the rows to explain: all, or a seeded sample, stratified for classes (a
    plain seeded sample when a class is too rare to stratify)."""
    if rows == "all" or int(rows) >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(y))
    try:
        picked, _ = train_test_split(
            positions,
            train_size=int(rows),
            random_state=seed,
            stratify=y if task != "regression" else None,
        )
    except ValueError:
        picked, _ = train_test_split(positions, train_size=int(rows), random_state=seed)
    return np.sort(picked)


def to_dask(frame: pd.DataFrame, partitions: int = 1) -> Any:
    """`frame` as a Dask frame in the same row order. `dd.from_pandas` sorts by the index unless
    told not to, and the values that come back are filed against `frame.index`: a sorted copy
    would give every row another row's values."""
    import dask.dataframe as dd

    return dd.from_pandas(frame, npartitions=max(1, min(partitions, len(frame))), sort=False)


def shap_values(client: Any, booster: Any, features: Any) -> np.ndarray:
    """TreeSHAP contributions on the cluster: (n, F + 1) or, multi-class, (n, K, F + 1); the
    last column is the base value (bias), and each row sums to the model's raw margin."""
    import xgboost.dask as dxgb

    # A DaskDMatrix: multi-class contributions are 3-D, which dask frames cannot hold.
    matrix = dxgb.DaskDMatrix(client, features, enable_categorical=True)
    lazy = dxgb.predict(client, booster, matrix, pred_contribs=True)
    return np.asarray(client.compute(lazy, sync=True))


def shap_interactions(client: Any, booster: Any, features: Any) -> np.ndarray:
    """Mean |SHAP interaction value| over rows (and classes) on the cluster: an (F, F) matrix
    whose diagonal holds the main effects."""
    import xgboost.dask as dxgb

    matrix = dxgb.DaskDMatrix(client, features, enable_categorical=True)
    lazy = dxgb.predict(client, booster, matrix, pred_interactions=True)
    values = np.abs(np.asarray(client.compute(lazy, sync=True)))[..., :-1, :-1]
    return values.reshape(-1, *values.shape[-2:]).mean(0)


def explanations(
    contribs: np.ndarray,
    data: pd.DataFrame,
    classes: list[str],
    *,
    max_rows: int | None = None,
    y: np.ndarray | None = None,
    task: TaskType = "regression",
    seed: int = 0,
) -> dict[str | None, Any]:
    """shap `Explanation`s: one (key None), or one per class for multi-class models. With
    `max_rows`, of a seeded sample of at most that many rows (stratified by `y` for classes),
    which is what the figures draw: all values are kept elsewhere."""
    import shap

    if max_rows is not None and len(data) > max_rows:
        rows = explain_sample(np.zeros(len(data)) if y is None else y, task, max_rows, seed)
        contribs, data = contribs[rows], data.iloc[rows]
    shown = shown_values(data)
    common = {"data": shown, "display_data": shown, "feature_names": list(data.columns)}
    if contribs.ndim == 2:
        return {None: shap.Explanation(contribs[:, :-1], contribs[:, -1], **common)}
    return {
        name: shap.Explanation(contribs[:, k, :-1], contribs[:, k, -1], **common)
        for k, name in enumerate(classes)
    }


def shown_values(data: pd.DataFrame) -> np.ndarray:
    """Feature values as a person reads them in shap's plots: numbers, and category names
    (never codes; "missing" for a gap). With categories the array holds objects: shap then
    labels a categorical dependence plot's axis by name, colours no beeswarm dots by a code's
    order (it greys them), and writes "island = Biscoe" on a waterfall."""
    categorical = [c for c in data.columns if isinstance(data[c].dtype, pd.CategoricalDtype)]
    if not categorical:
        return data.to_numpy(dtype=float)
    out = data.astype(object).to_numpy()
    for j, column in enumerate(data.columns):
        if column in categorical:
            out[:, j] = data[column].astype(object).where(data[column].notna(), "missing")
        else:
            out[:, j] = data[column].to_numpy(dtype=float)
    return out


def shap_frame(
    contribs: np.ndarray, row_ids: np.ndarray, features: list[str], classes: list[str]
) -> pd.DataFrame:
    """The values as a table: row_id, (class,) base_value, one column per feature."""

    def block(values: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame(values[:, :-1], columns=features)
        frame.insert(0, "base_value", values[:, -1])
        frame.insert(0, "row_id", row_ids)
        return frame

    if contribs.ndim == 2:
        return block(contribs)
    parts = [block(contribs[:, k]).assign(**{"class": name}) for k, name in enumerate(classes)]
    return pd.concat(parts, ignore_index=True)[["row_id", "class", "base_value", *features]]


def shap_figures(
    expl: dict[str | None, Any], *, max_display: int, dependence_top_k: int
) -> Iterator[tuple[str, Figure]]:
    """Beeswarm and mean |SHAP| bar (per class for multi-class, plus a stacked bar over
    classes), and dependence plots of the top features coloured by their strongest
    interaction. shap draws with pyplot: the caller logs and closes each figure."""
    import matplotlib.pyplot as plt
    import shap

    def drawn(draw: Any, title: str) -> Figure:
        before = set(plt.get_fignums())
        plt.figure()
        draw()
        fig = plt.gcf()
        for num in set(plt.get_fignums()) - before - {fig.number}:
            plt.close(num)  # some shap plots open a figure of their own
        fig.suptitle(title, y=1.0)
        return fig

    for label, e in expl.items():
        suffix, of = (f"_{slug(label)}", f" (class {label} margin)") if label else ("", "")
        yield (
            f"beeswarm{suffix}",
            drawn(
                lambda e=e: shap.plots.beeswarm(e, max_display=max_display, show=False),
                f"SHAP values per feature{of}",
            ),
        )
        yield (
            f"bar{suffix}",
            drawn(
                lambda e=e: shap.plots.bar(e, max_display=max_display, show=False),
                f"Mean |SHAP value|{of}",
            ),
        )
    if len(expl) > 1:
        classes = list(expl)
        first = expl[classes[0]]
        yield (
            "bar_stacked",
            drawn(
                lambda: shap.summary_plot(
                    [expl[c].values for c in classes],
                    first.data,
                    feature_names=first.feature_names,
                    class_names=classes,
                    plot_type="bar",
                    max_display=max_display,
                    show=False,
                ),
                "Mean |SHAP value| by class",
            ),
        )
    # Dependence: each explanation's own top features (multi-class: per class, named).
    for label, e in expl.items():
        suffix, of = (f"{slug(label)}_", f" (class {label} margin)") if label else ("", "")
        order = np.argsort(-np.abs(e.values).mean(0))[:dependence_top_k]
        for j in order:
            name = e.feature_names[j]
            yield (
                f"dependence_{suffix}{slug(name)}",
                drawn(
                    lambda j=j, e=e: shap.plots.scatter(e[:, j], color=e, show=False),
                    f"SHAP dependence: {name}{of}",
                ),
            )


def explained_labels(score: np.ndarray, task: TaskType) -> np.ndarray:
    """The output each local explanation explains: the positive class (binary), the predicted
    class (multi-class), the value (regression, label 0)."""
    if score.ndim == 2:
        return score.argmax(1)
    return np.full(len(score), 1 if task == "binary" else 0)


def explained_text(info: DatasetInfo, label: int) -> str:
    """The output a row's local explanations explain (see `explained_labels`), in words."""
    return "predicted value" if info.task == "regression" else f"class {info.classes[label]}"


def row_values(contribs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's SHAP values (+ base value last) for its explained output: (n, F + 1)."""
    return contribs if contribs.ndim == 2 else contribs[np.arange(len(labels)), labels]


def local_files(values: np.ndarray, data: pd.DataFrame, explained: str) -> tuple[bytes, str]:
    """One row's waterfall as PNG and force plot page (`local_plots` of a one-row `data`):
    drawn on a Dask worker, so that the flow's process is free meanwhile."""
    import matplotlib.pyplot as plt

    from tasks.figures import DRAWING, png

    with DRAWING:
        ((_, fig, force),) = local_plots(values, data, [explained])
        try:
            return png(fig), force
        finally:
            plt.close(fig)


def local_plots(
    values: np.ndarray, data: pd.DataFrame, explained: list[str]
) -> Iterator[tuple[Any, Figure, str]]:
    """Per row: a waterfall Figure and a force plot as a standalone HTML page, of `values` (SHAP
    values + base value of the output named in `explained`)."""
    import io

    import matplotlib.pyplot as plt
    import shap

    shown = shown_values(data)
    for i, row_id in enumerate(data.index):
        expl = shap.Explanation(
            values[i, :-1],
            values[i, -1],
            data=shown[i],
            display_data=shown[i],
            feature_names=list(data.columns),
        )
        before = set(plt.get_fignums())
        plt.figure()  # waterfall draws on the current figure: give each row its own
        shap.plots.waterfall(expl, max_display=12, show=False)
        fig = plt.gcf()
        for num in set(plt.get_fignums()) - before - {fig.number}:
            plt.close(num)
        fig.suptitle(f"Row {row_id}: why the model said that ({explained[i]})", y=1.02)
        buffer = io.StringIO()
        # Category values shielded: shap writes them raw into the page's script.
        features = [shield(v) if isinstance(v, str) else v for v in shown[i]]
        force = shap.plots.force(
            values[i, -1],
            values[i, :-1],
            features=np.asarray(features, dtype=object),
            feature_names=list(data.columns),
            matplotlib=False,
        )
        shap.save_html(buffer, force)
        yield row_id, fig, safe_page(buffer.getvalue())
