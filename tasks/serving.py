"""Scoring raw rows the way the logged model does: the preprocessing spec, the booster, then the
output in the user's terms (labels by name, probabilities per class name, or values).

Pure (pandas, numpy, xgboost): used by the MLflow pyfunc model (`tracking.GlassboxModel`), and
by anything else that scores raw rows, so that training and serving cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tasks.calibration import Platt
from tasks.preprocess import Spec, transform

PredictMethod = Literal["predict", "predict_proba"]
METHODS = ("predict", "predict_proba")


@dataclass(frozen=True)
class ModelCard:
    """What scoring needs besides the booster: stored as JSON beside it in the logged model."""

    task: str
    spec: Spec
    classes: list[str] = field(default_factory=list)
    threshold: float = 0.5  # binary: a row is the positive class (classes[1]) from here on
    calibration: Platt | None = None  # binary: margin -> calibrated probability
    labels: list[Any] = field(default_factory=list)  # the classes as the target held them

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        raw = json.loads(text)
        return cls(
            task=raw["task"],
            spec=Spec.from_dict(raw["spec"]),
            classes=list(raw.get("classes", [])),
            threshold=float(raw.get("threshold", 0.5)),
            calibration=Platt(**raw["calibration"]) if raw.get("calibration") else None,
            labels=list(raw.get("labels", [])),
        )


def scores(booster: Any, card: ModelCard, rows: pd.DataFrame) -> np.ndarray:
    """P(positive class) (binary, calibrated when the model carries a map), (n, K) class
    probabilities, or values, for raw rows."""
    return feature_scores(booster, card, transform(rows, card.spec))


def feature_scores(booster: Any, card: ModelCard, features: pd.DataFrame) -> np.ndarray:
    """`scores` of rows already preprocessed (`transform`)."""
    if card.calibration is not None:
        margin = booster.inplace_predict(features, predict_type="margin")
        return card.calibration.apply(np.asarray(margin))
    return np.asarray(booster.inplace_predict(features))


def predict(
    booster: Any, card: ModelCard, rows: pd.DataFrame, method: PredictMethod = "predict"
) -> np.ndarray | pd.DataFrame:
    """Raw rows -> an array of labels as the target held them (names; integers stay integers;
    binary at the model's threshold), or with
    `method="predict_proba"` a frame of probabilities with a column per class name;
    regression: an array of values either way. (Arrays, not named Series: MLflow's scoring
    server answers a Series as records of one-key objects.)

    Raises:
        ValueError: an unknown method.
        ConfigError: rows lack columns the model needs (named).
    """
    if method not in METHODS:
        raise ValueError(f"predict_method must be one of {', '.join(METHODS)}, not {method!r}")
    score = scores(booster, card, rows)
    if card.task == "regression":
        return score
    proba = score if score.ndim == 2 else np.column_stack([1 - score, score])
    if method == "predict_proba":
        return pd.DataFrame(proba, index=rows.index, columns=card.classes)
    codes = proba.argmax(1) if score.ndim == 2 else (score >= card.threshold).astype(int)
    return np.asarray(card.labels or card.classes)[codes]
