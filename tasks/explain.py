"""Explain stage: SHAP values from XGBoost's own TreeSHAP (`pred_contribs`), computed on the
cluster through `xgboost.dask` (so on the GPU when `device=cuda`), and shap's plots of them.

Multi-class models are explained per class, on each class's margin (never a class index).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import tracking
from tasks.cluster import ClusterHandle
from tasks.config import ConfigError, ExplainConfig, TaskType
from tasks.data import DatasetInfo, dask_split


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


def shap_values(client: Any, booster: Any, features: Any) -> np.ndarray:
    """TreeSHAP contributions on the cluster: (n, F + 1) or, multi-class, (n, K, F + 1); the
    last column is the base value (bias), and each row sums to the model's raw margin."""
    import xgboost.dask as dxgb

    # A DaskDMatrix: multi-class contributions are 3-D, which dask frames cannot hold.
    matrix = dxgb.DaskDMatrix(client, features, enable_categorical=True)
    lazy = dxgb.predict(client, booster, matrix, pred_contribs=True)
    return np.asarray(client.compute(lazy, sync=True))


def explanations(
    contribs: np.ndarray, data: pd.DataFrame, classes: list[str]
) -> dict[str | None, Any]:
    """shap `Explanation`s: one (key None), or one per class for multi-class models."""
    import shap

    shown = data.apply(lambda c: c.cat.codes.where(c.notna()) if c.dtype == "category" else c)
    common = {"data": shown.to_numpy(dtype=float), "feature_names": list(data.columns)}
    if contribs.ndim == 2:
        return {None: shap.Explanation(contribs[:, :-1], contribs[:, -1], **common)}
    return {
        name: shap.Explanation(contribs[:, k, :-1], contribs[:, k, -1], **common)
        for k, name in enumerate(classes)
    }


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
        suffix, of = (f"_{tracking.slug(label)}", f" (class {label} margin)") if label else ("", "")
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
    # Dependence: the top features of the first explanation (binary/regression: the only one).
    e = next(iter(expl.values()))
    order = np.argsort(-np.abs(e.values).mean(0))[:dependence_top_k]
    for j in order:
        name = e.feature_names[j]
        yield (
            f"dependence_{tracking.slug(name)}",
            drawn(
                lambda j=j: shap.plots.scatter(e[:, j], color=e, show=False),
                f"SHAP dependence: {name}",
            ),
        )


def select_rows(
    row_ids: np.ndarray,
    y_true: np.ndarray,
    score: np.ndarray,
    task: TaskType,
    cfg: ExplainConfig,
    threshold: float = 0.5,
) -> dict[str, list[Any]]:
    """Which test rows get local explanations, by rule, as the rows' own ids: the riskiest
    (binary), the most confident false positives and negatives (multi-class: confident
    errors; regression: largest residuals), a seeded random sample, and ids asked for.

    Raises:
        ConfigError: when `explain.row_ids` names rows that are not in the test set.
    """
    ids = np.asarray(row_ids)
    out: dict[str, np.ndarray] = {}
    if task == "binary" and cfg.top_risk:
        out["top_risk"] = ids[np.argsort(-score, kind="stable")[: cfg.top_risk]]
    if cfg.errors and task == "regression":
        out["largest_residuals"] = ids[
            np.argsort(-np.abs(y_true - score), kind="stable")[: cfg.errors]
        ]
    elif cfg.errors:
        pred = (score >= threshold).astype(int) if score.ndim == 1 else score.argmax(1)
        confidence = np.where(pred == 1, score, 1 - score) if score.ndim == 1 else score.max(1)
        wrong = pred != y_true
        groups = (
            {"false_positives": wrong & (pred == 1), "false_negatives": wrong & (pred == 0)}
            if task == "binary"
            else {"confident_errors": wrong}
        )
        for rule, mask in groups.items():
            picked = np.flatnonzero(mask)[np.argsort(-confidence[mask], kind="stable")]
            out[rule] = ids[picked[: cfg.errors]]
    if cfg.random_rows:
        rng = np.random.default_rng(cfg.seed)
        out["random"] = ids[
            np.sort(rng.choice(len(ids), min(cfg.random_rows, len(ids)), replace=False))
        ]
    if cfg.row_ids:
        known = {str(i): i for i in ids}
        missing = [str(r) for r in cfg.row_ids if str(r) not in known]
        if missing:
            raise ConfigError(f"explain.row_ids: not in the test set: {', '.join(missing)}")
        out["requested"] = np.asarray([known[str(r)] for r in cfg.row_ids])
    return {
        rule: [v.item() if hasattr(v, "item") else v for v in rows]
        for rule, rows in out.items()
        if len(rows)
    }


def local_plots(
    contribs: np.ndarray, data: pd.DataFrame, score: np.ndarray, classes: list[str]
) -> Iterator[tuple[Any, Figure, str]]:
    """Per row: a waterfall Figure and a force plot as a standalone HTML page. Multi-class rows
    are explained on the margin of their predicted class."""
    import io

    import matplotlib.pyplot as plt
    import shap

    shown = data.apply(lambda c: c.cat.codes.where(c.notna()) if c.dtype == "category" else c)
    for i, row_id in enumerate(data.index):
        values = contribs[i] if contribs.ndim == 2 else contribs[i, int(np.argmax(score[i]))]
        if contribs.ndim == 3:
            what = f"margin of class {classes[int(np.argmax(score[i]))]}"
        else:
            what = f"log-odds of {classes[1]}" if classes else "predicted value"
        expl = shap.Explanation(
            values[:-1],
            values[-1],
            data=shown.iloc[i].to_numpy(dtype=float),
            feature_names=list(data.columns),
        )
        before = set(plt.get_fignums())
        plt.figure()  # waterfall draws on the current figure: give each row its own
        shap.plots.waterfall(expl, max_display=12, show=False)
        fig = plt.gcf()
        for num in set(plt.get_fignums()) - before - {fig.number}:
            plt.close(num)
        fig.suptitle(f"Row {row_id}: why the model said that ({what})", y=1.02)
        buffer = io.StringIO()
        force = shap.plots.force(
            values[-1],
            values[:-1],
            features=data.iloc[i],
            feature_names=list(data.columns),
            matplotlib=False,
        )
        shap.save_html(buffer, force)
        yield row_id, fig, buffer.getvalue()


@task(name="explain-model", cache_policy=NO_CACHE)
def explain_model(
    cluster: ClusterHandle,
    model_path: str,
    info: DatasetInfo,
    splits: dict[str, str],
    cfg: ExplainConfig,
    workspace: str,
    run_id: str,
) -> dict[str, Any]:
    """SHAP on a sample of the test set (or all of it), computed on the cluster; logs the
    values as Parquet and the global figures under explanations/shap/."""
    import xgboost as xgb

    test = pd.read_parquet(splits["test"]).astype(info.feature_dtypes())
    idx = explain_sample(test[info.target].to_numpy(), info.task, cfg.shap_rows, cfg.seed)
    sample = test.iloc[idx]
    features = (
        dask_split(splits["test"], info)[0]
        if len(idx) == len(test)
        else _to_dask(sample[info.features])
    )
    booster = xgb.Booster(model_file=model_path)
    contribs = shap_values(cluster.client, booster, features)
    path = Path(workspace) / "shap_values.parquet"
    shap_frame(contribs, sample.index.to_numpy(), info.features, info.classes).to_parquet(path)
    tracking.log_file(run_id, path, "explanations/shap")
    logged = []
    expl = explanations(contribs, sample[info.features], info.classes)
    for name, fig in shap_figures(
        expl, max_display=cfg.max_display, dependence_top_k=cfg.dependence_top_k
    ):
        logged.append(f"explanations/shap/{name}.png")
        tracking.log_figure(run_id, fig, logged[-1])
    chosen = _explain_rows(booster, test, info, cfg, run_id)
    get_run_logger().info(
        "SHAP for %d test rows: %d figures; local: %s", len(idx), len(logged), chosen
    )
    return {"rows": len(idx), "figures": logged, "local": chosen}


def _explain_rows(
    booster: Any, test: pd.DataFrame, info: DatasetInfo, cfg: ExplainConfig, run_id: str
) -> dict[str, list[Any]]:
    """Local explanations (waterfall PNG, force HTML) of the rows the rules pick."""
    import xgboost as xgb

    score = booster.inplace_predict(test[info.features])
    chosen = select_rows(
        test.index.to_numpy(), test[info.target].to_numpy(), np.asarray(score), info.task, cfg
    )
    rows = test.loc[list(dict.fromkeys(r for ids in chosen.values() for r in ids))]
    contribs = booster.predict(
        xgb.DMatrix(rows[info.features], enable_categorical=True), pred_contribs=True
    )
    row_score = np.asarray(booster.inplace_predict(rows[info.features]))
    for row_id, fig, html in local_plots(contribs, rows[info.features], row_score, info.classes):
        tracking.log_figure(
            run_id, fig, f"explanations/shap/row_{tracking.slug(str(row_id))}_waterfall.png"
        )
        tracking.log_text(
            run_id, html, f"explanations/shap/row_{tracking.slug(str(row_id))}_force.html"
        )
    tracking.log_text(
        run_id, json.dumps(chosen, indent=2, default=str), "explanations/local_rows.json"
    )
    return chosen


def _to_dask(frame: pd.DataFrame) -> Any:
    import dask.dataframe as dd

    return dd.from_pandas(frame, npartitions=1)
