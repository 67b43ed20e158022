"""What the model says about one raw row, and why: the prediction in the user's terms, SHAP
contributions summed per raw input (a date's calendar parts count as one input), the change from
a starting row, and LIME for the row on request.

Pure (numpy, pandas, xgboost, lime): a booster and the model card in, numbers out. TreeSHAP on one
row takes well under a millisecond; the cost of an update is pandas' preprocessing of one row.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from tasks.lime_rows import BoosterPredictor, build_explainer, encode, explain_row
from tasks.preprocess import transform
from tasks.serving import ModelCard, feature_scores, scores
from whatif.inputs import InputField, same, shown, to_row


@dataclass(frozen=True)
class Explained:
    """One input's prediction and its explanation for one class (or the value)."""

    values: dict[str, Any]  # the form's values, by raw column
    outputs: dict[str, float]  # probability per class name, or {"value": v}
    label: str  # the predicted class, or the value as text
    explained: str | None  # the class explained (None: regression)
    units: str  # what the contributions add up to
    base: float  # the model's average output, in `units`
    contributions: dict[str, float]  # per raw column, in `units`
    server_ms: float = 0.0

    @property
    def total(self) -> float:
        return self.base + sum(self.contributions.values())

    @property
    def headline(self) -> float:
        """The number a user watches: P(explained class), or the value."""
        return self.outputs[self.explained] if self.explained else self.outputs["value"]


@dataclass
class WhatIf:
    """A model ready to explain single rows."""

    booster: xgb.Booster
    card: ModelCard
    _columns: list[tuple[str, list[int]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index = {f: i for i, f in enumerate(self.card.spec.features)}
        self._columns = [(c.name, [index[f] for f in c.features]) for c in self.card.spec.columns]
        # One row at a time: threads cost more to start than the row takes.
        self.booster.set_param({"nthread": 1, "device": "cpu"})

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def default_class(self, outputs: dict[str, float]) -> str | None:
        """The class a page explains unless asked otherwise: the positive class of a binary
        model, the most probable class of a multi-class one."""
        if self.card.task == "regression":
            return None
        if self.card.task == "binary":
            return self.card.classes[1]
        return max(outputs, key=outputs.__getitem__)

    def explain(
        self, form: list[InputField], values: dict[str, Any], explained: str | None = None
    ) -> Explained:
        """Predict and explain the row the form's `values` describe."""
        start = time.perf_counter()
        features = transform(to_row(form, values), self.card.spec)
        contribs = self._contributions(features)[0]
        outputs = self._outputs(features)[0]
        card = self.card
        if card.task == "regression":
            units, k = "the predicted value", None
            label = f"{outputs['value']:.4g}"
        else:
            if card.task == "binary":  # at the model's decision threshold, as it serves
                label = card.classes[int(outputs[card.classes[1]] >= card.threshold)]
            else:
                label = max(outputs, key=outputs.__getitem__)
            explained = explained if explained in card.classes else self.default_class(outputs)
            k = card.classes.index(str(explained))
            units = (
                f"log-odds of {card.classes[1]}"
                if card.task == "binary"
                else f"the model's margin for {explained}"
            )
        row = contribs if k is None or contribs.ndim == 1 else contribs[k]
        if card.task == "binary" and k == 0:  # the other side of the same log-odds
            row = -row
        if card.task == "binary" and card.calibration is not None:
            row = row * card.calibration.slope
            row[-1] += card.calibration.intercept * (1 if k != 0 else -1)
        if card.task == "binary":
            units = f"log-odds of {card.classes[k or 0]}"
        by_column = {name: float(row[idx].sum()) for name, idx in self._columns}
        return Explained(
            values=dict(values),
            outputs=outputs,
            label=label,
            explained=None if k is None else card.classes[k],
            units=units,
            base=float(row[-1]),
            contributions=by_column,
            server_ms=(time.perf_counter() - start) * 1000,
        )

    def _contributions(self, features: pd.DataFrame) -> np.ndarray:
        matrix = xgb.DMatrix(features, enable_categorical=True)
        return np.asarray(self.booster.predict(matrix, pred_contribs=True))

    def _outputs(self, features: pd.DataFrame) -> list[dict[str, float]]:
        """Calibrated P(class) per class name, or the value, as the served model gives it."""
        card = self.card
        score = feature_scores(self.booster, card, features)
        if card.task == "regression":
            return [{"value": float(v)} for v in np.ravel(score)]
        proba = score if score.ndim == 2 else np.column_stack([1 - score, score])
        return [dict(zip(card.classes, map(float, p), strict=True)) for p in proba]

    def scores(self, rows: pd.DataFrame) -> np.ndarray:
        """P(positive), class probabilities (n, K), or values, for many raw rows."""
        return scores(self.booster, self.card, rows)

    def importance(self, rows: pd.DataFrame) -> dict[str, float]:
        """Mean |SHAP| per raw column over `rows` (summed over classes)."""
        contribs = np.abs(self._contributions(transform(rows, self.card.spec)))
        per_feature = contribs.reshape(-1, contribs.shape[-1])[:, :-1]
        if contribs.ndim == 3:
            per_feature = contribs[..., :-1].sum(1)
        mean = per_feature.mean(0)
        return {name: float(mean[idx].sum()) for name, idx in self._columns}


@dataclass(frozen=True)
class Change:
    """One input's part in the change from the starting row to the current input."""

    column: str
    start: str
    now: str
    edited: bool
    delta: float  # the change of its contribution, in the explanation's units


def difference(start: Explained, now: Explained, top: int = 10) -> list[Change]:
    """Which inputs moved the prediction from the starting row, and by how much: the change of
    each input's SHAP contribution (they add up to the change of the output, in the units of
    the explanation). Edited inputs first, then the largest moves among the others (a tree
    model's interactions move inputs nobody touched)."""
    changes = [
        Change(
            column,
            shown(start.values.get(column)),
            shown(now.values.get(column)),
            not same(start.values.get(column), now.values.get(column)),
            now.contributions[column] - start.contributions.get(column, 0.0),
        )
        for column in now.contributions
    ]
    edited = sorted((c for c in changes if c.edited), key=lambda c: -abs(c.delta))
    others = sorted(
        (c for c in changes if not c.edited and abs(c.delta) > 1e-9), key=lambda c: -abs(c.delta)
    )
    return (edited + others)[: max(top, len(edited))]


@dataclass
class LocalLime:
    """LIME for one row at a time, with its statistics learnt once from reference rows (the
    test rows kept with the run): the same explainer and prediction function as the training
    run's LIME pages (`tasks.lime_rows`)."""

    card: ModelCard
    booster: xgb.Booster
    reference: pd.DataFrame  # raw rows
    samples: int = 5_000
    seed: int = 0
    _explainer: Any = field(init=False, repr=False)
    _predict: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        spec = self.card.spec
        features = transform(self.reference, spec)
        self._explainer = build_explainer(
            encode(features, spec.categories),
            spec.features,
            spec.categories,
            self.card.classes,
            self.card.task == "regression",
            self.seed,
        )
        cats = spec.categories
        self._predict = BoosterPredictor(
            bytes(self.booster.save_raw("ubj")),
            self.card.task,
            {spec.features.index(c): len(v) for c, v in cats.items()},
            nthread=2,
            calibration=self.card.calibration,
        )

    def explain(
        self, form: list[InputField], values: dict[str, Any], explained: str | None, shown_: int
    ) -> dict[str, Any]:
        """LIME's weights (largest first, with the condition LIME states), intercept, local
        prediction and the local fit's R² for the row."""
        start = time.perf_counter()
        features = transform(to_row(form, values), self.card.spec)
        row = encode(features, self.card.spec.categories)[0]
        label = self.card.classes.index(explained) if explained else 0
        result = explain_row(
            self._explainer,
            self._predict,
            row,
            label=label,
            position=0,
            seed=self.seed,
            num_samples=self.samples,
            shown=shown_,
        )
        order = np.argsort(-np.abs(result["weights"]), kind="stable")[:shown_]
        return {
            "weights": [
                {"condition": result["conditions"][j], "weight": float(result["weights"][j])}
                for j in order
            ],
            "intercept": result["intercept"],
            "local_prediction": result["local_prediction"],
            "r2": result["score"],
            "samples": self.samples,
            "server_ms": (time.perf_counter() - start) * 1000,
        }


def to_json(explained: Explained, changes: list[Change]) -> dict[str, Any]:
    """The numbers behind the page, for API clients (`gradio_client`) and for the curious."""

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and math.isnan(v) else v

    return {
        "outputs": explained.outputs,
        "label": explained.label,
        "explained": explained.explained,
        "units": explained.units,
        "base": explained.base,
        "contributions": explained.contributions,
        "values": {k: clean(v) for k, v in explained.values.items()},
        "change": [c.__dict__ for c in changes],
        "server_ms": round(explained.server_ms, 2),
    }
