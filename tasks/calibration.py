"""Probability calibration of binary models: a logistic (Platt) map of the booster's margin,
fitted on the valid split and carried by the logged model.

Platt rather than isotonic: two numbers fitted on a few dozen positives (a fraud valid split)
do not overfit, and the map is linear in log-odds, so calibrated SHAP values are the margin's
times `slope` and the base value moves by `intercept`: explanations stay exact and additive.
Pure: numpy and scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Platt:
    """Calibrated log-odds = slope * margin + intercept."""

    slope: float = 1.0
    intercept: float = 0.0

    def log_odds(self, margin: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(margin, dtype=float) + self.intercept

    def apply(self, margin: np.ndarray) -> np.ndarray:
        """P(positive) from the booster's margin."""
        return 1.0 / (1.0 + np.exp(-self.log_odds(margin)))

    def contributions(self, contribs: np.ndarray) -> np.ndarray:
        """TreeSHAP values of the margin (features..., base value last) as values of the
        calibrated log-odds: each feature's times `slope`, the base value mapped. Rows still
        add up: to the calibrated log-odds."""
        out = np.asarray(contribs, dtype=float) * self.slope
        out[..., -1] += self.intercept
        return out


def fit_platt(margin: np.ndarray, y: np.ndarray) -> Platt:
    """Fit the map on held-out rows (the valid split): an unpenalised logistic regression of the
    label on the margin."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=1000)
    model.fit(np.asarray(margin, dtype=float).reshape(-1, 1), np.asarray(y))
    return Platt(float(model.coef_[0, 0]), float(model.intercept_[0]))
