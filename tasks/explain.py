"""Explain stage: SHAP values from XGBoost's own TreeSHAP (`pred_contribs`), computed on the
cluster through `xgboost.dask` (so on the GPU when `device=cuda`), and shap's plots of them.

Multi-class models are explained per class, on each class's margin (never a class index).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import tracking
from tasks.calibration import Platt
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
    # Dependence: each explanation's own top features (multi-class: per class, named).
    for label, e in expl.items():
        suffix, of = (f"{tracking.slug(label)}_", f" (class {label} margin)") if label else ("", "")
        order = np.argsort(-np.abs(e.values).mean(0))[:dependence_top_k]
        for j in order:
            name = e.feature_names[j]
            yield (
                f"dependence_{suffix}{tracking.slug(name)}",
                drawn(
                    lambda j=j, e=e: shap.plots.scatter(e[:, j], color=e, show=False),
                    f"SHAP dependence: {name}{of}",
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


def shap_interactions(client: Any, booster: Any, features: Any) -> np.ndarray:
    """Mean |SHAP interaction value| over rows (and classes) on the cluster: an (F, F) matrix
    whose diagonal holds the main effects."""
    import xgboost.dask as dxgb

    matrix = dxgb.DaskDMatrix(client, features, enable_categorical=True)
    lazy = dxgb.predict(client, booster, matrix, pred_interactions=True)
    values = np.abs(np.asarray(client.compute(lazy, sync=True)))[..., :-1, :-1]
    return values.reshape(-1, *values.shape[-2:]).mean(0)


def explained_labels(score: np.ndarray, task: TaskType) -> np.ndarray:
    """The output each local explanation explains: the positive class (binary), the predicted
    class (multi-class), the value (regression, label 0)."""
    if score.ndim == 2:
        return score.argmax(1)
    return np.full(len(score), 1 if task == "binary" else 0)


def row_values(contribs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's SHAP values (+ base value last) for its explained output: (n, F + 1)."""
    return contribs if contribs.ndim == 2 else contribs[np.arange(len(labels)), labels]


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
        force = shap.plots.force(
            values[i, -1],
            values[i, :-1],
            features=data.iloc[i],
            feature_names=list(data.columns),
            matplotlib=False,
        )
        shap.save_html(buffer, force)
        yield row_id, fig, buffer.getvalue()


def lime_chunks(
    client: Any,
    booster: Any,
    train: pd.DataFrame,
    rows: pd.DataFrame,
    labels: np.ndarray,
    info: DatasetInfo,
    cfg: ExplainConfig,
    platt: Platt | None = None,
) -> list[tuple[Any, np.ndarray]]:
    """LIME for `rows` (features only), each for its label, in chunks over the Dask workers'
    threads; the explainer is built once, on a seeded sample of the training rows. LIME
    explains the probabilities users read (calibrated by `platt` when given). Returns (future
    of the chunk's results, the chunk's row positions) pairs."""
    from tasks.lime_rows import BoosterPredictor, build_explainer, encode, explain_chunk

    sample = train.sample(min(cfg.lime_train_rows, len(train)), random_state=cfg.seed)
    explainer = build_explainer(
        encode(sample, info.categories),
        list(train.columns),
        info.categories,
        info.classes,
        info.task == "regression",
        cfg.seed,
    )
    predict = BoosterPredictor(
        bytes(booster.save_raw("ubj")),
        info.task,
        {info.features.index(c): len(cats) for c, cats in info.categories.items()},
        calibration=(platt.slope, platt.intercept) if platt is not None else None,
    )
    x = encode(rows, info.categories)
    slots = max(1, sum(client.nthreads().values()))
    chunks = [c for c in np.array_split(np.arange(len(x)), min(slots, len(x))) if len(c)]
    shared = client.scatter([explainer, predict], broadcast=True)
    return [
        (
            client.submit(
                explain_chunk,
                *shared,
                x[c],
                labels[c].tolist(),
                c.tolist(),
                seed=cfg.seed,
                num_samples=cfg.lime_samples,
                shown=cfg.lime_features,
                pure=False,
            ),
            c,
        )
        for c in chunks
    ]


def lime_rows(
    client: Any,
    booster: Any,
    train: pd.DataFrame,
    rows: pd.DataFrame,
    labels: np.ndarray,
    shap_rows: np.ndarray,
    info: DatasetInfo,
    cfg: ExplainConfig,
    platt: Platt | None = None,
) -> list[Any]:
    """`lime_chunks`, then each row's comparison with its SHAP values (`shap_rows`, (n, F))
    and its figures, drawn on the workers. Returns one future per row (of
    `lime_rows.row_figures`' result), so the caller can draw the SHAP figures meanwhile."""
    from tasks.lime_rows import compared_k, row_figures

    top_k = compared_k(len(info.features), cfg.compare_top_k)
    return [
        client.submit(
            row_figures,
            chunk,
            k,
            shap_rows[i],
            info.features,
            top_k=top_k,
            shown=cfg.lime_features,
            texts=_lime_texts(rows.index[i], int(labels[i]), info, top_k),
            min_score=cfg.lime_min_score,
            pure=False,
        )
        for chunk, positions in lime_chunks(client, booster, train, rows, labels, info, cfg, platt)
        for k, i in enumerate(positions)
    ]


def _lime_texts(row_id: Any, label: int, info: DatasetInfo, top_k: int) -> dict[str, str]:
    """Titles and units of a row's LIME chart and comparison figure (format templates)."""
    safe = str(row_id).replace("{", "{{").replace("}", "}}")
    explained = _explained(info, label)
    if info.task == "regression":
        shap_unit = lime_unit = explained
    else:
        shap_unit = "log-odds" if info.task == "binary" else f"margin of {info.classes[label]}"
        lime_unit = f"P({info.classes[label]})"
    return {
        "chart": f"Row {safe}: LIME ({explained}), local fit R² {{score:.2f}}",
        "comparison": f"Row {safe}: SHAP vs LIME, top-{top_k} of {len(info.features)} Jaccard "
        "{top_k_jaccard:.2f} (chance {top_k_jaccard_chance:.2f}), Spearman {spearman:.2f}",
        "shap_unit": f"SHAP ({shap_unit})",
        "lime_unit": f"LIME ({lime_unit})",
    }


def index_page(entries: list[dict[str, Any]], title: str) -> str:
    """`explanations/index.html`: one section per explained row with its id, the rules that
    chose it, label and prediction, the SHAP/LIME agreement, the waterfall and comparison
    figures embedded (the page works on its own inside MLflow's artifact viewer, which
    sandboxes it), and the paths of the row's other artifacts, linked relative to the page
    (links work where the artifacts are files: a download or `mlruns/`)."""
    import base64
    import html

    def img(png: bytes | None, alt: str) -> str:
        if not png:
            return ""
        data = base64.b64encode(png).decode()
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    rows = []
    toc = []
    for e in entries:
        anchor = f"row-{html.escape(tracking.slug(str(e['row_id'])))}"
        agree = (
            f"top-{e['top_k']} overlap (Jaccard) {e['top_k_jaccard']:.2f} against "
            f"{e['top_k_jaccard_chance']:.2f} by chance, rank correlation {e['spearman']:.2f}, "
            f"LIME local R² {e['lime_score']:.2f}"
            + ("" if e["trusted"] else " <b>(too low: LIME's surrogate is not to be trusted)</b>")
            if "top_k_jaccard" in e
            else "LIME off"
        )
        links = " · ".join(
            f'<a class="file" href="{html.escape(path)}"><code>explanations/'
            f"{html.escape(path)}</code></a>"
            for path in e["files"]
        )
        toc.append(
            f'<tr><td><a href="#{anchor}">{html.escape(str(e["row_id"]))}</a></td>'
            f"<td>{html.escape(', '.join(e['rules']))}</td><td>{html.escape(e['label'])}</td>"
            f"<td>{html.escape(e['prediction'])}</td><td>{html.escape(e['explained'])}</td>"
            f"<td>{e.get('top_k_jaccard', float('nan')):.2f}</td>"
            f"<td>{e.get('spearman', float('nan')):.2f}</td></tr>"
        )
        rows.append(
            f'<section id="{anchor}"><h2>Row {html.escape(str(e["row_id"]))}</h2>'
            f"<p>Chosen as: <b>{html.escape(', '.join(e['rules']))}</b>. Label "
            f"<b>{html.escape(e['label'])}</b>, prediction <b>{html.escape(e['prediction'])}"
            f"</b>; explained: {html.escape(e['explained'])}.</p><p>SHAP vs LIME: {agree}</p>"
            f'<div class="figs">{img(e.get("waterfall"), "SHAP waterfall")}'
            f"{img(e.get('comparison'), 'SHAP vs LIME')}</div>"
            f'<p class="files">Files: {links}</p></section>'
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body {{ font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.15em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
th {{ background: #f3f3f3; }} section {{ border-top: 1px solid #ddd; margin-top: 1.5em; }}
.figs img {{ display: block; max-width: 100%; margin-bottom: 0.5em; }}
.files {{ font-size: 0.85em; color: #555; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(entries)} rows explained locally. Interactive pages (SHAP force plots, LIME) are in the
run's artifacts at the paths listed per row: select them in the MLflow artifact tree.</p>
<table><tr><th>row</th><th>chosen as</th><th>label</th><th>prediction</th><th>explained</th>
<th>top-k Jaccard</th><th>Spearman</th></tr>
{"".join(toc)}</table>
{"".join(rows)}
<script>
// MLflow's artifact viewer shows this page from a sandboxed blob: URL, where links relative to
// the page lead nowhere: keep the paths as text there.
if (location.protocol === "blob:") {{
  document.querySelectorAll("a.file").forEach((a) => a.removeAttribute("href"));
}}
</script>
</body></html>
"""


@task(name="explain-model", cache_policy=NO_CACHE)
def explain_model(
    cluster: ClusterHandle,
    trained: dict[str, Any],
    info: DatasetInfo,
    splits: dict[str, str],
    cfg: ExplainConfig,
    threshold: float,
    workspace: str,
    run_id: str,
) -> dict[str, Any]:
    """SHAP on a sample of the test set (or all of it) on the cluster, with its global figures
    under explanations/shap/; local SHAP and LIME for the rows the rules pick, compared, with
    an index page. A calibrated binary model is explained in calibrated log-odds, the
    probabilities its users read."""
    import xgboost as xgb

    booster = xgb.Booster(model_file=trained["model"])
    platt = trained.get("calibration")
    test = pd.read_parquet(splits["test"]).astype(info.feature_dtypes())
    start = time.perf_counter()
    rows, figures = _global_shap(
        cluster, booster, platt, test, info, splits, cfg, workspace, run_id
    )
    middle = time.perf_counter()
    local = _local(cluster, booster, platt, test, info, splits, cfg, threshold, run_id)
    get_run_logger().info(
        "SHAP for %d test rows with %d figures: %.1f s; local SHAP%s for %d rows: %.1f s (%s)",
        rows,
        len(figures),
        middle - start,
        " + LIME" if cfg.lime else "",
        len({r for ids in local["chosen"].values() for r in ids}),
        time.perf_counter() - middle,
        ", ".join(f"{rule}: {len(ids)}" for rule, ids in local["chosen"].items()),
    )
    return {"rows": rows, "figures": figures, **local}


def _global_shap(
    cluster: ClusterHandle,
    booster: Any,
    platt: Platt | None,
    test: pd.DataFrame,
    info: DatasetInfo,
    splits: dict[str, str],
    cfg: ExplainConfig,
    workspace: str,
    run_id: str,
) -> tuple[int, list[str]]:
    """Values (Parquet) for the sample or all rows; figures from at most `plot_rows` of them."""
    y = test[info.target].to_numpy()
    idx = explain_sample(y, info.task, cfg.shap_rows, cfg.seed)
    sample = test.iloc[idx]
    features = (
        dask_split(splits["test"], info)[0]
        if len(idx) == len(test)
        else to_dask(sample[info.features], _slots(cluster))
    )
    contribs = shap_values(cluster.client, booster, features)
    if platt is not None:
        contribs = platt.contributions(contribs)
    path = Path(workspace) / "shap_values.parquet"
    shap_frame(contribs, sample.index.to_numpy(), info.features, info.classes).to_parquet(path)
    tracking.log_file(run_id, path, "explanations/shap")
    expl = explanations(
        contribs,
        sample[info.features],
        info.classes,
        max_rows=cfg.plot_rows,
        y=y[idx],
        task=info.task,
        seed=cfg.seed,
    )
    logged = []
    for name, fig in shap_figures(
        expl, max_display=cfg.max_display, dependence_top_k=cfg.dependence_top_k
    ):
        logged.append(f"explanations/shap/{name}.png")
        tracking.log_figure(run_id, fig, logged[-1])
    if cfg.interaction_rows:
        from tasks.figures import interaction_heatmap

        few = sample.iloc[explain_sample(y[idx], info.task, cfg.interaction_rows, cfg.seed)]
        mean_abs = shap_interactions(
            cluster.client, booster, to_dask(few[info.features], _slots(cluster))
        ) * (platt.slope if platt is not None else 1.0)
        logged.append("explanations/shap/interactions.png")
        tracking.log_figure(
            run_id, interaction_heatmap(mean_abs, info.features, top=cfg.max_display), logged[-1]
        )
    return len(idx), logged


def _local(
    cluster: ClusterHandle,
    booster: Any,
    platt: Platt | None,
    test: pd.DataFrame,
    info: DatasetInfo,
    splits: dict[str, str],
    cfg: ExplainConfig,
    threshold: float,
    run_id: str,
) -> dict[str, Any]:
    """Local SHAP (waterfall, force page) and LIME (page, chart, weights) for the chosen rows,
    their agreement (table, mean metrics, a figure per row), and explanations/index.html; the
    files are logged in one batch."""
    import xgboost as xgb

    if platt is None:
        score = np.asarray(booster.inplace_predict(test[info.features]))
    else:
        score = platt.apply(booster.inplace_predict(test[info.features], predict_type="margin"))
    chosen = select_rows(
        test.index.to_numpy(), test[info.target].to_numpy(), score, info.task, cfg, threshold
    )
    ids = list(dict.fromkeys(r for rows in chosen.values() for r in rows))
    rows = test.loc[ids]
    row_score = score[test.index.get_indexer(ids)]
    labels = explained_labels(row_score, info.task)
    contribs = booster.predict(
        xgb.DMatrix(rows[info.features], enable_categorical=True), pred_contribs=True
    )
    values = row_values(platt.contributions(contribs) if platt else contribs, labels)
    # LIME and its figures run on the workers while this process draws the SHAP figures.
    pending = (
        lime_rows(
            cluster.client,
            booster,
            pd.read_parquet(splits["train"]).astype(info.feature_dtypes())[info.features],
            rows[info.features],
            labels,
            values[:, :-1],
            info,
            cfg,
            platt,
        )
        if cfg.lime and ids
        else []
    )
    entries = [
        {
            "row_id": row_id,
            "rules": [rule for rule, picked in chosen.items() if row_id in picked],
            **_describe(info, rows[info.target].iloc[i], row_score[i], labels[i]),
        }
        for i, row_id in enumerate(ids)
    ]
    with tracking.artifact_batch(run_id, "explanations") as out:
        decision = threshold if info.task == "binary" else None
        out.text(
            "local_rows.json",
            json.dumps({"threshold": decision, "rows": chosen}, indent=2, default=str),
        )
        plots = local_plots(values, rows[info.features], [e["explained"] for e in entries])
        for i, (_, waterfall, force) in enumerate(plots):
            entry = entries[i]
            name = tracking.slug(str(entry["row_id"]))
            entry["files"] = [f"shap/row_{name}_waterfall.png", f"shap/row_{name}_force.html"]
            entry["waterfall"] = out.figure(entry["files"][0], waterfall)
            out.text(entry["files"][1], force)
        for entry, result in zip(entries, cluster.client.gather(pending), strict=False):
            _lime_files(out, entry, result, info, cfg)
        title = f"Local explanations: {info.name}"
        if info.task == "binary":
            title += f" (errors at decision threshold {threshold:g})"
        out.text("index.html", index_page(entries, title))
    metrics: dict[str, float] = {}
    if cfg.lime and entries:
        table = agreement_table(entries)
        tracking.log_table(run_id, table, "explanations/shap_vs_lime.json")
        metrics = agreement_metrics(table)
        tracking.log_metrics(run_id, metrics)
    return {"chosen": chosen, "metrics": metrics}


AGREEMENT = ("top_k_jaccard", "top_k_jaccard_chance", "top_k_jaccard_adjusted", "spearman")


def agreement_table(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """`explanations/shap_vs_lime.json`: a row per locally explained row."""
    return pd.DataFrame(
        [
            {
                "row_id": str(e["row_id"]),
                "rules": ", ".join(e["rules"]),
                "explained": e["explained"],
                "top_k": e["top_k"],
                **{k: e[k] for k in (*AGREEMENT, "lime_score", "trusted")},
            }
            for e in entries
        ]
    )


def agreement_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Run metrics of the SHAP/LIME agreement over the rows whose LIME fit can be trusted
    (a surrogate that does not fit says nothing about agreement), and how many those are."""
    trusted = table[table["trusted"]]
    metrics = {f"shap_lime_{k}_mean": float(trusted[k].mean()) for k in AGREEMENT}
    metrics["shap_lime_rows_trusted"] = float(len(trusted))
    metrics["shap_lime_rows"] = float(len(table))
    return {k: v for k, v in metrics.items() if np.isfinite(v)}


def _lime_files(
    out: tracking.ArtifactBatch,
    entry: dict[str, Any],
    result: dict[str, Any],
    info: DatasetInfo,
    cfg: ExplainConfig,
) -> None:
    """One row's LIME page, weights, chart and SHAP-vs-LIME figure; adds the files and the
    agreement to the row's index entry."""
    from tasks.lime_rows import compared_k, page

    name = tracking.slug(str(entry["row_id"]))
    files = [f"lime/row_{name}.{ext}" for ext in ("html", "json", "png")]
    files.append(f"shap_vs_lime/row_{name}.png")
    out.text(files[0], page(result))
    record = {
        "row_id": entry["row_id"],
        "explained": entry["explained"],
        "prediction": entry["prediction"],
        "seed": cfg.seed,
        "num_samples": cfg.lime_samples,
        **{k: result[k] for k in ("label", "intercept", "local_prediction", "score")},
        "weights": {
            feature: {"condition": condition, "weight": weight}
            for feature, condition, weight in zip(
                info.features, result["conditions"], result["weights"], strict=True
            )
        },
        "shap_vs_lime": result["agreement"],
    }
    out.text(files[1], json.dumps(record, indent=2, default=str))
    out.write_bytes(files[2], result["chart"])
    out.write_bytes(files[3], result["comparison"])
    entry["comparison"] = result["comparison"]
    entry["files"] += files
    entry.update(
        result["agreement"],
        top_k=compared_k(len(info.features), cfg.compare_top_k),
        lime_score=result["score"],
        trusted=result["trusted"],
    )


def _slots(cluster: ClusterHandle) -> int:
    """The cluster's worker threads: how many partitions keep all of them busy."""
    return max(1, sum(cluster.client.nthreads().values()))


def _explained(info: DatasetInfo, label: int) -> str:
    """The output a row's local explanations explain (see `explained_labels`), in words."""
    return "predicted value" if info.task == "regression" else f"class {info.classes[label]}"


def _describe(info: DatasetInfo, label: Any, score: Any, explained: int) -> dict[str, str]:
    """A row's label, prediction and explained output, in words."""
    if info.task == "regression":
        label_text, prediction = f"{float(label):.4g}", f"{float(score):.4g}"
    elif info.task == "binary":
        label_text = info.classes[int(label)]
        prediction = f"P({info.classes[1]}) = {float(score):.4g}"
    else:
        top = int(np.argmax(score))
        label_text = info.classes[int(label)]
        prediction = f"{info.classes[top]} (P = {float(score[top]):.3g})"
    return {
        "label": label_text,
        "prediction": prediction,
        "explained": _explained(info, int(explained)),
    }


def to_dask(frame: pd.DataFrame, partitions: int = 1) -> Any:
    """`frame` as a Dask frame in the same row order. `dd.from_pandas` sorts by the index unless
    told not to, and the values that come back are filed against `frame.index`: a sorted copy
    would give every row another row's values."""
    import dask.dataframe as dd

    return dd.from_pandas(frame, npartitions=max(1, min(partitions, len(frame))), sort=False)
