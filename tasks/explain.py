"""Explain stage: TreeSHAP on a sample of the test set with its global figures, local SHAP and
LIME for the rows the rules pick, their agreement and an index page, all logged to MLflow.

The pieces: `tasks.treeshap` (values and plots), `tasks.row_picking` (which rows),
`tasks.lime_dask` (LIME over the workers, agreement), `tasks.explain_page` (the HTML page).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import tracking
from tasks.calibration import Platt
from tasks.cluster import ClusterHandle
from tasks.config import ExplainConfig
from tasks.data import DatasetInfo, dask_split
from tasks.explain_page import index_page
from tasks.lime_dask import agreement_metrics, agreement_table, lime_rows
from tasks.names import unique_slug
from tasks.row_picking import select_rows
from tasks.treeshap import (
    explain_sample,
    explained_labels,
    explained_text,
    explanations,
    local_files,
    row_values,
    shap_figures,
    shap_frame,
    shap_interactions,
    shap_values,
    to_dask,
)


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
    values = _shap_values(cluster, booster, platt, test, info, splits, cfg, workspace, run_id)
    # The chosen rows' figures and LIME go to the workers first; the global figures are drawn
    # here while the workers draw the rows.
    local = _start_local(cluster, booster, platt, test, info, splits, cfg, threshold)
    figures = _global_figures(values, info, cfg, run_id)
    drawn = time.perf_counter()
    done = _finish_local(cluster, local, info, cfg, threshold, run_id)
    get_run_logger().info(
        "SHAP for %d test rows with %d figures: %.1f s; local SHAP%s for %d rows, on the "
        "workers meanwhile: done %.1f s later (%s)",
        len(values["sample"]),
        len(figures),
        drawn - start,
        " + LIME" if cfg.lime else "",
        len(local["entries"]),
        time.perf_counter() - drawn,
        ", ".join(f"{rule}: {len(ids)}" for rule, ids in local["chosen"].items()),
    )
    return {"rows": len(values["sample"]), "figures": figures, **done}


def _shap_values(
    cluster: ClusterHandle,
    booster: Any,
    platt: Platt | None,
    test: pd.DataFrame,
    info: DatasetInfo,
    splits: dict[str, str],
    cfg: ExplainConfig,
    workspace: str,
    run_id: str,
) -> dict[str, Any]:
    """SHAP values on the cluster for the sample or all rows (logged as Parquet), and the
    interaction heatmap's mean |interaction| when it is asked for: everything the global
    figures need from the workers, computed before the workers get the rows' figures."""
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
    interactions = None
    if cfg.interaction_rows:
        few = sample.iloc[explain_sample(y[idx], info.task, cfg.interaction_rows, cfg.seed)]
        interactions = shap_interactions(
            cluster.client, booster, to_dask(few[info.features], _slots(cluster))
        ) * (platt.slope if platt is not None else 1.0)
    return {"sample": sample, "y": y[idx], "contribs": contribs, "interactions": interactions}


def _global_figures(
    values: dict[str, Any], info: DatasetInfo, cfg: ExplainConfig, run_id: str
) -> list[str]:
    """The global SHAP figures (from at most `plot_rows` of the sample) and the interaction
    heatmap, drawn in this process and logged under explanations/shap/."""
    expl = explanations(
        values["contribs"],
        values["sample"][info.features],
        info.classes,
        max_rows=cfg.plot_rows,
        y=values["y"],
        task=info.task,
        seed=cfg.seed,
    )
    logged = []
    for name, fig in shap_figures(
        expl, max_display=cfg.max_display, dependence_top_k=cfg.dependence_top_k
    ):
        logged.append(f"explanations/shap/{name}.png")
        tracking.log_figure(run_id, fig, logged[-1])
    if values["interactions"] is not None:
        from tasks.explanation_figures import interaction_heatmap

        logged.append("explanations/shap/interactions.png")
        heatmap = interaction_heatmap(values["interactions"], info.features, top=cfg.max_display)
        tracking.log_figure(run_id, heatmap, logged[-1])
    return logged


def _start_local(
    cluster: ClusterHandle,
    booster: Any,
    platt: Platt | None,
    test: pd.DataFrame,
    info: DatasetInfo,
    splits: dict[str, str],
    cfg: ExplainConfig,
    threshold: float,
) -> dict[str, Any]:
    """The rows the rules pick, their index entries, and their local SHAP (waterfall, force
    page) and LIME submitted to the workers: futures that `_finish_local` collects."""
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
    entries = [
        {
            "row_id": row_id,
            "rules": [rule for rule, picked in chosen.items() if row_id in picked],
            **_describe(info, rows[info.target].iloc[i], row_score[i], labels[i]),
        }
        for i, row_id in enumerate(ids)
    ]
    # The waterfall's axis: the value, or log-odds / a class's margin (calibrated ones).
    unit = {
        "binary": "calibrated log-odds" if platt is not None else "log-odds",
        "multiclass": "margin",
    }.get(info.task)
    # Each row's SHAP figures, LIME and its figures: drawn on the workers.
    shap_files = [
        cluster.client.submit(
            local_files,
            values[i : i + 1],
            rows[info.features].iloc[[i]],
            e["explained"] + (f", in {unit}" if unit else ""),
            pure=False,
        )
        for i, e in enumerate(entries)
    ]
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
    return {"chosen": chosen, "entries": entries, "shap_files": shap_files, "lime": pending}


def _finish_local(
    cluster: ClusterHandle,
    local: dict[str, Any],
    info: DatasetInfo,
    cfg: ExplainConfig,
    threshold: float,
    run_id: str,
) -> dict[str, Any]:
    """The rows' files (`_start_local`'s futures) logged in one batch with
    explanations/index.html, and LIME's agreement with SHAP (table, mean metrics)."""
    chosen, entries = local["chosen"], local["entries"]
    with tracking.artifact_batch(run_id, "explanations") as out:
        decision = threshold if info.task == "binary" else None
        out.text(
            "local_rows.json",
            json.dumps({"threshold": decision, "rows": chosen}, indent=2, default=str),
        )
        for entry, (waterfall, force) in zip(
            entries, cluster.client.gather(local["shap_files"]), strict=True
        ):
            name = unique_slug(str(entry["row_id"]))
            entry["files"] = [f"shap/row_{name}_waterfall.png", f"shap/row_{name}_force.html"]
            entry["waterfall"] = waterfall
            out.write_bytes(entry["files"][0], waterfall)
            out.text(entry["files"][1], force)
        for entry, result in zip(entries, cluster.client.gather(local["lime"]), strict=False):
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


def _lime_files(
    out: tracking.ArtifactBatch,
    entry: dict[str, Any],
    result: dict[str, Any],
    info: DatasetInfo,
    cfg: ExplainConfig,
) -> None:
    """One row's LIME page and weights and its SHAP-vs-LIME figure; adds the files and the
    agreement to the row's index entry."""
    from tasks.lime_rows import compared_k, page

    name = unique_slug(str(entry["row_id"]))
    files = [f"lime/row_{name}.{ext}" for ext in ("html", "json")]
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
    out.write_bytes(files[2], result["comparison"])
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
        "explained": explained_text(info, int(explained)),
    }
