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
    """Fit the map on held-out rows (the valid split) by maximum likelihood with Platt's
    smoothed targets ((N+ + 1) / (N+ + 2) for positives, 1 / (N- + 2) for negatives), which
    keeps a map fitted on a few dozen positives from claiming certainty."""
    from scipy.optimize import minimize

    m = np.asarray(margin, dtype=float)
    y = np.asarray(y)
    positives = int(y.sum())
    target = np.where(y == 1, (positives + 1) / (positives + 2), 1 / (len(y) - positives + 2))

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        z = params[0] * m + params[1]
        # log(1 + e^z) - t z, and its gradient, computed stably
        value = np.sum(np.logaddexp(0.0, z) - target * z)
        residual = 1.0 / (1.0 + np.exp(-z)) - target
        return float(value), np.array([np.sum(residual * m), np.sum(residual)])

    fitted = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return Platt(float(fitted.x[0]), float(fitted.x[1]))
