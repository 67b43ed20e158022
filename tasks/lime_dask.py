"""LIME for the locally explained rows, orchestrated over the Dask workers (the per-row work is
in `tasks.lime_rows`), and its agreement with SHAP summarised as a table and run metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.calibration import Platt
from tasks.config import ExplainConfig
from tasks.data import DatasetInfo
from tasks.treeshap import explained_text


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
        calibration=platt,
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
            texts=_lime_texts(rows.index[i], int(labels[i]), info, top_k),
            min_score=cfg.lime_min_score,
            pure=False,
        )
        for chunk, positions in lime_chunks(client, booster, train, rows, labels, info, cfg, platt)
        for k, i in enumerate(positions)
    ]


def _lime_texts(row_id: Any, label: int, info: DatasetInfo, top_k: int) -> dict[str, str]:
    """The title (a format template) and units of a row's comparison figure."""
    safe = str(row_id).replace("{", "{{").replace("}", "}}")
    explained = explained_text(info, label)
    if info.task == "regression":
        shap_unit = lime_unit = explained
    else:
        shap_unit = "log-odds" if info.task == "binary" else f"margin of {info.classes[label]}"
        lime_unit = f"P({info.classes[label]})"
    return {
        "comparison": f"Row {safe}: SHAP vs LIME, top-{top_k} of {len(info.features)} Jaccard "
        "{top_k_jaccard:.2f} (chance {top_k_jaccard_chance:.2f}), Spearman {spearman:.2f}",
        "shap_unit": f"SHAP ({shap_unit})",
        "lime_unit": f"LIME ({lime_unit})",
    }


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
