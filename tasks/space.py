"""A sweep's search space and metric, checked before anything runs: the default space per task,
XGBoost's parameter aliases, the metric per task and its direction, Optuna's distributions.
No Prefect, no MLflow: the CLI checks a config with these before a Prefect server starts.
"""

from __future__ import annotations

from typing import Any, Literal

from tasks.config import ConfigError, Dimension, PipelineConfig, SweepConfig, TaskType
from tasks.promotion import LOWER_IS_BETTER, primary_metric

Direction = Literal["maximize", "minimize"]


def _dims(raw: dict[str, dict[str, Any]]) -> dict[str, Dimension]:
    return {name: Dimension(**spec) for name, spec in raw.items()}


_CLASSIFIER_SPACE = {
    "max_depth": {"type": "int", "low": 2, "high": 10},
    "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
    # Classification hessians are p(1-p): small weights keep leaves for rare classes possible.
    "min_child_weight": {"type": "float", "low": 0.1, "high": 20, "log": True},
    "subsample": {"type": "float", "low": 0.5, "high": 1.0},
    "colsample_bytree": {"type": "float", "low": 0.5, "high": 1.0},
    "reg_lambda": {"type": "float", "low": 0.001, "high": 10, "log": True},
    "reg_alpha": {"type": "float", "low": 0.001, "high": 10, "log": True},
}
# The default space per task: the parameters that move gradient-boosted trees most, with ranges
# from XGBoost's tuning guide.
DEFAULT_SPACE: dict[TaskType, dict[str, Dimension]] = {
    "binary": _dims(_CLASSIFIER_SPACE),
    "multiclass": _dims(_CLASSIFIER_SPACE),
    "regression": _dims(
        {
            **_CLASSIFIER_SPACE,
            # squared error's hessian is 1 a row: min_child_weight counts rows here
            "min_child_weight": {"type": "float", "low": 1, "high": 50, "log": True},
        }
    ),
}
# Valid-split metrics a sweep can optimise, per task (names as in the runs' test metrics).
METRICS: dict[TaskType, tuple[str, ...]] = {
    "binary": (
        "average_precision",
        "roc_auc",
        "log_loss",
        "brier_score",
        "f1_score",
        "accuracy_score",
        "balanced_accuracy_score",
        "matthews_corrcoef",
    ),
    "multiclass": (
        "log_loss",
        "accuracy_score",
        "balanced_accuracy_score",
        "f1_macro",
        "roc_auc_macro",
    ),
    "regression": ("root_mean_squared_error", "mean_absolute_error", "r2_score"),
}
# Parameters a sweep must not vary: the task decides them.
_FIXED = {"objective": "the task", "eval_metric": "the task (early stopping uses it)"}
# XGBoost's parameter aliases: a sampled `eta` must replace a configured `learning_rate`.
ALIASES = (
    {"eta", "learning_rate"},
    {"lambda", "reg_lambda"},
    {"alpha", "reg_alpha"},
    {"gamma", "min_split_loss"},
    {"seed", "random_state"},
)


def with_sampled(params: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """`params` with the sampled values in, a configured alias of a sampled name taken out
    (XGBoost would otherwise get both `learning_rate` and `eta`, and one would silently win)."""
    covered = set(sampled)
    for group in ALIASES:
        if group & covered:
            covered |= group
    return {**{k: v for k, v in params.items() if k not in covered}, **sampled}


def resolve_space(cfg: SweepConfig, task: TaskType) -> dict[str, Dimension]:
    """The configured space, or the task's default."""
    return dict(cfg.space) if cfg.space is not None else dict(DEFAULT_SPACE[task])


def check_space(space: dict[str, Dimension], train_params: dict[str, Any]) -> None:
    """Ask XGBoost whether it knows every parameter of the space and takes both ends of each
    range and every choice, before any trial runs.

    Raises:
        ConfigError: naming the parameter (`sweep.space.<name>`) and the problem.
    """
    from tasks.xgb_checks import check_params

    if not space:
        raise ConfigError("sweep.space: empty; name at least one XGBoost parameter to vary")
    for name, why in _FIXED.items():
        if name in space:
            raise ConfigError(f"sweep.space.{name}: set from {why}, not searched")
    for group in ALIASES:
        if len(group & set(space)) > 1:
            raise ConfigError(f"sweep.space: {' and '.join(sorted(group))} are one parameter")
    for name, dim in space.items():
        for value in dim.values or (_end(dim, 0), _end(dim, 1)):
            check_params(with_sampled(train_params, {name: value}), f"sweep.space.{name}")
    # parameters that exclude each other
    for which in (0, 1):
        sampled = {k: _end(d, which) for k, d in space.items()}
        check_params(with_sampled(train_params, sampled), "sweep.space")


def _end(dim: Dimension, which: int) -> Any:
    if dim.values:
        return dim.values[which % len(dim.values)]
    value = dim.low if which == 0 else dim.high
    return int(value) if dim.type == "int" else value  # type: ignore[arg-type]


def resolve_metric(
    metric: str, task: TaskType, positive_share: float | None
) -> tuple[str, Direction]:
    """The metric to optimise and its direction; `auto` is the retraining gate's primary metric.

    Raises:
        ConfigError: the metric does not fit the task.
    """
    name = primary_metric(task, positive_share) if metric == "auto" else metric
    if name not in METRICS[task]:
        raise ConfigError(
            f"sweep.metric: '{name}' does not fit the task '{task}' (metrics for {task}: "
            f"{', '.join(METRICS[task])})"
        )
    return name, "minimize" if name in LOWER_IS_BETTER else "maximize"


def distributions(space: dict[str, Dimension]) -> dict[str, Any]:
    """Optuna's distributions for the space."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for name, d in space.items():
        if d.type == "choice":
            out[name] = CategoricalDistribution(list(d.values or ()))
        elif d.type == "int":
            out[name] = IntDistribution(int(d.low), int(d.high), log=d.log)  # type: ignore[arg-type]
        else:
            out[name] = FloatDistribution(d.low, d.high, log=d.log)  # type: ignore[arg-type]
    return out


def check_sweep(cfg: PipelineConfig) -> None:
    """What can be checked of a sweep without the data: a space given in the config (every
    parameter known to XGBoost, both ends and every choice accepted)."""
    if cfg.sweep.space is not None:
        check_space(dict(cfg.sweep.space), cfg.train.params)
