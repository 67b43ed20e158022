"""LIME for chosen rows: the pure core, run on the Dask workers.

This module imports neither Prefect nor MLflow: a worker unpickling a function from a module that
imports them pays ~2 s of imports, more than LIME takes for twenty rows.

Where plain LIME spends its time and what is done instead (measured on the fraud preset, 5,000
samples per row, 2 cores): scipy's `truncnorm` called once per feature to undo the quartile
discretisation (~60% of a row) -> `FastQuartileDiscretizer` draws the truncated normals of all
features in one vectorised call; an sklearn wrapper rebuilding a DataFrame per call -> the
booster predicts on LIME's arrays directly; one row at a time on one core -> rows go to the
workers in chunks. Every row gets its own random stream from (seed, row position), so the
weights do not depend on how rows were chunked.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lime.discretize import QuartileDiscretizer
from lime.lime_tabular import LimeTabularExplainer
from scipy.special import ndtr, ndtri

from tasks.calibration import Platt
from tasks.html_safety import safe_page, shield, unshield

MISSING = "(missing)"


def truncated_normal(
    low: np.ndarray, high: np.ndarray, mean: np.ndarray, std: np.ndarray, rng: Any
) -> np.ndarray:
    """Draws from Normal(mean, std) truncated to [low, high], elementwise (see `_Truncation`)."""
    return _Truncation(low, high, mean, std).draw(rng, ...)


class _Truncation:
    """Truncated normals drawn by inverting the CDF. The CDF at both ends is computed once per
    interval; intervals above the mean are mirrored so it is evaluated in the accurate tail."""

    def __init__(self, low: np.ndarray, high: np.ndarray, mean: np.ndarray, std: np.ndarray):
        a, b = (low - mean) / std, (high - mean) / std
        self.flip = a > 0
        self.cdf_low = ndtr(np.where(self.flip, -b, a))
        self.cdf_span = ndtr(np.where(self.flip, -a, b)) - self.cdf_low
        self.low, self.high, self.mean, self.std = low, high, mean, std

    def draw(self, rng: Any, index: Any) -> np.ndarray:
        """Draws for the intervals at `index` (any numpy index into the intervals)."""
        low, high = self.low[index], self.high[index]
        u = self.cdf_low[index] + self.cdf_span[index] * rng.random_sample(np.shape(low))
        z = ndtri(u)
        z = np.where(self.flip[index], -z, z)
        drawn = np.clip(self.mean[index] + self.std[index] * z, low, high)
        return np.where(low < high, drawn, low)


class FastQuartileDiscretizer(QuartileDiscretizer):
    """LIME's quartile discretiser with a vectorised `undiscretize` (same bins, same per-bin
    truncated normals; one draw for all features instead of one scipy call per feature)."""

    def __init__(self, data: np.ndarray, categorical_features: list[int], *args: Any, **kw: Any):
        super().__init__(data, categorical_features, *args, **kw)
        self._features = np.array(sorted(self.means), dtype=int)
        width = max((len(self.means[f]) for f in self._features), default=1)

        def padded(stat: dict[int, list[float]]) -> np.ndarray:
            return np.array(
                [list(stat[f]) + [np.nan] * (width - len(stat[f])) for f in self._features],
                dtype=float,
            ).reshape(len(self._features), width)

        with np.errstate(invalid="ignore"):
            self._bins = _Truncation(
                *(padded(s) for s in (self.mins, self.maxs, self.means, self.stds))
            )

    def undiscretize(self, data: np.ndarray) -> np.ndarray:
        out = np.array(data, dtype=float, copy=True)
        flat = out.reshape(-1, out.shape[-1])
        if len(self._features):
            bins = flat[:, self._features].astype(int)
            flat[:, self._features] = self._bins.draw(
                self.random_state, (np.arange(len(self._features)), bins)
            )
        return out


def encode(frame: Any, categories: dict[str, list[str]]) -> np.ndarray:
    """A frame as LIME's float matrix: categoricals as their codes, missing categories as one
    more code (`len(categories)`), numbers as they are (NaN stays NaN)."""
    columns = []
    for name in frame.columns:
        col = frame[name]
        if name in categories:
            codes = col.cat.codes.to_numpy().astype(float)
            codes[codes < 0] = len(categories[name])
            columns.append(codes)
        else:
            columns.append(col.to_numpy(dtype=float, na_value=np.nan))
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def build_explainer(
    train: np.ndarray,
    feature_names: list[str],
    categories: dict[str, list[str]],
    class_names: list[str],
    regression: bool,
    seed: int,
) -> LimeTabularExplainer:
    """`LimeTabularExplainer` on a training sample (as `encode` gives it): feature and class
    names, categorical columns with their category names, quartile bins. Missing numbers in the
    sample are replaced by seeded draws from the observed values of their column (LIME's
    quartiles and bin statistics are undefined with NaN)."""
    rng = np.random.default_rng(seed)
    train = np.array(train, dtype=float, copy=True)
    for j in range(train.shape[1]):
        missing = np.isnan(train[:, j])
        if missing.all():
            train[:, j] = 0.0
        elif missing.any():
            train[missing, j] = rng.choice(train[~missing, j], int(missing.sum()))
    cat_idx = [feature_names.index(name) for name in categories]
    discretizer = FastQuartileDiscretizer(train, cat_idx, feature_names, random_state=seed)
    return LimeTabularExplainer(
        train,
        mode="regression" if regression else "classification",
        feature_names=feature_names,
        categorical_features=cat_idx,
        # Names shielded: LIME writes them raw into its page's script (`tasks.html_safety`).
        categorical_names={
            feature_names.index(name): [*map(shield, cats), MISSING]
            for name, cats in categories.items()
        },
        class_names=None if regression else [shield(c) for c in class_names],
        discretize_continuous=True,
        discretizer=discretizer,
        feature_selection="none",  # weights for every feature; the pages show the top ones
        random_state=seed,
    )


@dataclass
class BoosterPredictor:
    """LIME's prediction function: the booster on LIME's float arrays (category codes, the
    extra 'missing' code turned back into NaN). Classifiers return class probabilities (binary:
    calibrated by the Platt map when one is given).
    Picklable: the model travels as bytes and is loaded once per process."""

    model: bytes
    task: str
    n_categories: dict[int, int]
    nthread: int = 1
    calibration: Platt | None = None  # binary: margin -> calibrated probability
    _booster: Any = field(default=None, init=False, repr=False, compare=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._booster is None:
            import xgboost as xgb

            self._booster = xgb.Booster(model_file=bytearray(self.model))
            # LIME's samples are numpy arrays in host memory: predict there, also for a model
            # trained on a GPU (no device-mismatch copies).
            self._booster.set_param({"nthread": self.nthread, "device": "cpu"})
        if self.n_categories:
            x = np.array(x, dtype=float, copy=True)
            for j, n in self.n_categories.items():
                x[x[:, j] >= n, j] = np.nan
        if self.calibration is None:
            p = np.asarray(self._booster.inplace_predict(x))
        else:
            margin = self._booster.inplace_predict(x, predict_type="margin")
            p = self.calibration.apply(np.asarray(margin))
        return np.column_stack([1.0 - p, p]) if self.task == "binary" else p

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_booster": None}


def explain_row(
    explainer: LimeTabularExplainer,
    predict: BoosterPredictor,
    row: np.ndarray,
    *,
    label: int,
    position: int,
    seed: int,
    num_samples: int,
    shown: int,
) -> dict[str, Any]:
    """One row's LIME explanation, seeded by (seed, position): weights of every feature (in
    feature order), the condition LIME states for each, intercept, local fit, and LIME's
    explanation object (for `page`, which shows the `shown` largest weights)."""
    # Own copies: threads of one worker share the explainer, and its random state is per row.
    explainer = copy.copy(explainer)
    explainer.discretizer = copy.copy(explainer.discretizer)
    explainer.base = copy.copy(explainer.base)
    rng = np.random.RandomState([seed, position])
    explainer.random_state = explainer.base.random_state = explainer.discretizer.random_state = rng
    regression = explainer.mode == "regression"
    exp = explainer.explain_instance(
        row,
        predict,
        labels=(label,),
        num_features=len(row),
        num_samples=num_samples,
    )
    key = 1 if regression else label  # LIME keeps regression weights under 1 (0: negated)
    pairs = exp.as_map()[key]
    conditions = exp.domain_mapper.map_exp_ids(pairs)
    weights = np.zeros(len(row))
    named = {}
    for (j, w), (condition, _) in zip(pairs, conditions, strict=True):
        weights[j] = w
        # A missing number falls in LIME's top quartile bin; say what the row really holds.
        missing = j in explainer.discretizer.lambdas and np.isnan(row[j])
        named[j] = (
            f"{explainer.feature_names[j]} is missing (LIME: {condition})" if missing else condition
        )
    exp.local_exp[key] = sorted(pairs, key=lambda p: -abs(p[1]))[:shown]
    return {
        "label": label,
        "weights": weights.tolist(),
        "conditions": [unshield(named.get(j, "")) for j in range(len(row))],
        "intercept": float(np.ravel(exp.intercept[key])[0]),
        "local_prediction": float(np.ravel(exp.local_pred)[0]),
        "score": float(exp.score),
        # LIME's page is made where it is written (`page`): it embeds ~1 MB of JavaScript,
        # which is not worth sending back from the workers.
        "explanation": exp,
    }


def page(result: dict[str, Any]) -> str:
    """LIME's HTML page for a result of `explain_row`."""
    exp = result["explanation"]
    labels = None if exp.mode == "regression" else (result["label"],)
    return safe_page(str(exp.as_html(labels=labels)))


def explain_chunk(
    explainer: LimeTabularExplainer,
    predict: BoosterPredictor,
    rows: np.ndarray,
    labels: list[int],
    positions: list[int],
    *,
    seed: int,
    num_samples: int,
    shown: int,
) -> list[dict[str, Any]]:
    """`explain_row` for a chunk of rows (what one Dask task runs)."""
    return [
        explain_row(
            explainer,
            predict,
            row,
            label=label,
            position=position,
            seed=seed,
            num_samples=num_samples,
            shown=shown,
        )
        for row, label, position in zip(rows, labels, positions, strict=True)
    ]


def compared_k(n_features: int, top_k: int) -> int:
    """The k of the top-k comparison: at most a third of the features, so that two unrelated
    rankings rarely share their top k (with 5 features, two random top-5 sets are equal)."""
    return max(1, min(top_k, n_features // 3))


def chance_jaccard(n_features: int, k: int) -> float:
    """Expected Jaccard overlap of two independent random k-subsets of n features: the
    baseline a top-k agreement has to beat (hypergeometric overlap i, Jaccard i / (2k - i))."""
    from scipy.stats import hypergeom

    overlap = np.arange(0, k + 1)
    p = hypergeom(n_features, k, k).pmf(overlap)
    return float(np.sum(p * overlap / (2 * k - overlap)))


def agreement(shap_values: np.ndarray, lime_weights: np.ndarray, top_k: int) -> dict[str, float]:
    """How far LIME agrees with SHAP on one row: the Jaccard overlap of their top-k features by
    |attribution|, beside what two random top-k sets would score (`_chance`) and the overlap
    adjusted for it (0 = chance, 1 = the same sets; negative: worse than chance), and the
    Spearman rank correlation of the signed attributions of all features (NaN when either
    is constant)."""
    from scipy.stats import spearmanr

    s, w = np.asarray(shap_values, dtype=float), np.asarray(lime_weights, dtype=float)
    a, b = (set(np.argsort(-np.abs(v), kind="stable")[:top_k].tolist()) for v in (s, w))
    constant = np.ptp(s) == 0 or np.ptp(w) == 0
    jaccard = len(a & b) / len(a | b)
    chance = chance_jaccard(len(s), top_k)
    return {
        "top_k_jaccard": jaccard,
        "top_k_jaccard_chance": chance,
        "top_k_jaccard_adjusted": (jaccard - chance) / (1 - chance) if chance < 1 else np.nan,
        "spearman": float("nan") if constant else float(spearmanr(s, w).statistic),
    }


def row_figures(
    chunk: list[dict[str, Any]],
    k: int,
    shap_row: np.ndarray,
    features: list[str],
    *,
    top_k: int,
    texts: dict[str, str],
    min_score: float = 0.0,
) -> dict[str, Any]:
    """Row `k` of a chunk's results with its agreement with SHAP and the SHAP-vs-LIME figure
    as PNG (LIME's bars labelled with its conditions; LIME's own chart is on its page): drawn
    on the worker that holds the result, while the client draws the SHAP figures. `texts`: the
    title (`comparison`, a template of the agreement's keys) and the two methods' units. A row
    whose LIME local fit R² is under `min_score` is marked untrusted, in its title too."""
    from tasks import figures as figs
    from tasks.explanation_figures import shap_vs_lime

    result = chunk[k]
    weights = np.asarray(result["weights"])
    agree = agreement(shap_row, weights, top_k)
    trusted = bool(result["score"] >= min_score)
    warning = "" if trusted else f"\nLIME's local fit R² is under {min_score:g}: not to be trusted"
    with figs.DRAWING:
        comparison = shap_vs_lime(
            features,
            shap_row,
            weights,
            top_k=top_k,
            title=texts["comparison"].format(**agree) + warning,
            shap_unit=texts["shap_unit"],
            lime_unit=texts["lime_unit"],
            lime_conditions=list(result["conditions"]),
            lime_fit=float(result["score"]),
        )
        png = figs.png(comparison)
    return {**result, "agreement": agree, "trusted": trusted, "comparison": png}
