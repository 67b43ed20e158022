"""Which test rows get local explanations, by rule (riskiest, confident errors at the run's
decision threshold, largest residuals, seeded random, ids asked for). Pure."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.config import ConfigError, ExplainConfig, TaskType


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
        check_requested(cfg.row_ids, ids)
        known = {str(i): i for i in ids}
        out["requested"] = np.asarray([known[str(r)] for r in cfg.row_ids])
    return {
        rule: [v.item() if hasattr(v, "item") else v for v in rows]
        for rule, rows in out.items()
        if len(rows)
    }


def check_requested(requested: tuple[Any, ...], row_ids: Any) -> None:
    """Raise `ConfigError` naming the requested ids (`explain.row_ids`) the test set lacks."""
    known = {str(i) for i in row_ids}
    missing = [str(r) for r in requested if str(r) not in known]
    if missing:
        raise ConfigError(f"explain.row_ids: not in the test set: {', '.join(missing)}")
