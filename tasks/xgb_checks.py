"""XGBoost parameters and objectives checked before anything runs: XGBoost itself is asked, on
8 rows, in milliseconds. No Prefect, no MLflow: the CLI checks a config with these before a
Prefect server starts.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import xgboost as xgb

from tasks.config import ConfigError, TaskType

# Parameters Glassbox sets from the cluster and the data; users configure them elsewhere.
_MANAGED = {
    "nthread": "the Dask worker's threads",
    "n_jobs": "the Dask worker's threads",
    "device": "cluster.kind",
    "num_class": "the data",
}


# Objectives whose predictions Glassbox can score per task: probabilities for classes (not
# margins, hinge labels or softmax class indices), values for regression.
_FITTING_OBJECTIVES: dict[TaskType, tuple[str, ...]] = {
    "binary": ("binary:logistic",),
    "multiclass": ("multi:softprob",),
    "regression": (
        "reg:squarederror",
        "reg:squaredlogerror",
        "reg:pseudohubererror",
        "reg:absoluteerror",
        "reg:quantileerror",
        "reg:logistic",
        "reg:gamma",
        "reg:tweedie",
        "count:poisson",
    ),
}


def check_objective(task: str, params: dict[str, Any]) -> None:
    """Refuse a `train.params.objective` that does not fit the (declared or detected) task.

    Raises:
        ConfigError: naming the objective, the task, and the objectives that fit it.
    """
    objective = params.get("objective")
    if objective is None or task == "auto":
        return
    fitting = _FITTING_OBJECTIVES[task]  # type: ignore[index]
    if objective not in fitting:
        raise ConfigError(
            f"train.params.objective '{objective}' does not fit the task '{task}' "
            f"(objectives for {task}: {', '.join(fitting)})"
        )


def check_params(params: dict[str, Any], key: str = "train.params") -> None:
    """Ask XGBoost itself whether it knows and accepts `train.params`, on 8 rows, in milliseconds.

    Raises:
        ConfigError: naming unknown parameters or the value XGBoost refuses (under `key`).
    """
    managed = sorted(set(params) & set(_MANAGED))
    if managed:
        raise ConfigError(
            f"{key}: " + "; ".join(f"'{k}' is set from {_MANAGED[k]}" for k in managed)
        )
    rng = np.random.default_rng(0)
    dm = xgb.DMatrix(rng.normal(size=(8, 2)), label=np.arange(8) % 2)
    probe = {k: v for k, v in params.items() if k not in ("objective", "eval_metric", "num_class")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            xgb.train({**probe, "nthread": 1}, dm, num_boost_round=1)
        except xgb.core.XGBoostError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"{key}: XGBoost refuses them: {first}") from None
    unused = [
        name
        for w in caught
        for group in re.findall(r"Parameters: \{(.*?)\} are not used", str(w.message), re.S)
        for name in re.findall(r'"([^"]+)"', group)
    ]
    if unused:
        raise ConfigError(f"{key}: unknown XGBoost parameter(s): {', '.join(unused)}")
