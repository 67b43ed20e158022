"""Pipeline configuration: one frozen pydantic model per stage, composed into `PipelineConfig`.

The same models validate YAML presets (`conf/*.yaml`), `--set` overrides on the command line and
the Prefect UI's parameter form, so a wrong key or value fails before any compute, naming the key.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

TaskType = Literal["binary", "multiclass", "regression"]
# Cell values that mean "missing" (pandas' CSV reader already turns most of them into NaN).
MISSING_TOKENS = (
    "",
    "NA",
    "N/A",
    "n/a",
    "na",
    "NaN",
    "nan",
    "NULL",
    "null",
    "Null",
    "None",
    "none",
    "?",
    "-",
    "--",
    "#N/A",
    "missing",
)


def _check_known(name: str, known: tuple[str, ...] | list[str], what: str) -> None:
    """`unknown <what> 'x' (did you mean 'y'? <what>s: ...)` when `name` is not in `known`."""
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown {what} '{name}' ({hint}{what}s: {', '.join(known)})")


DEFAULT_STORE = "sqlite:///mlruns/mlflow.db"


class ConfigError(ValueError):
    """A configuration or input problem a user can fix; the message says which and how."""


class _Stage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InjectConfig(_Stage):
    """Drift injected on purpose after reading, to see the drift check and the gate react."""

    shift: dict[str, float] = Field(
        default_factory=dict,
        description="numeric column -> shift in units of its standard deviation, e.g. {V14: 1.5}",
    )
    scale: dict[str, float] = Field(
        default_factory=dict, description="numeric column -> factor its spread is multiplied by"
    )
    positive_rate: float | None = Field(
        None, gt=0, lt=0.5, description="builtin:fraud: the share of fraud rows to generate"
    )

    @field_validator("scale")
    @classmethod
    def _positive_factors(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not v > 0]
        if bad:
            raise ValueError(f"factors must be > 0 (column {bad[0]})")
        return value


class DataConfig(_Stage):
    """Where the data comes from and what to predict."""

    source: str = Field(
        description="`builtin:<name>` (breast_cancer, wine, iris, digits, diabetes, fraud) "
        "or a path to a .csv or .parquet file",
    )
    target: str | None = Field(None, description="target column; built-in data sets know their own")
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    id_column: str | None = Field(
        None, description="column holding row ids; default: the row's position in the input"
    )
    drop: tuple[str, ...] = Field((), description="columns that are not features (ids, leaks)")
    columns: dict[str, Literal["auto", "number", "category", "date", "drop"]] = Field(
        default_factory=dict,
        description="per-column type or role, instead of what the profile decides: number, "
        "category, date, drop (or auto)",
    )
    encoding: str = Field("utf-8", description="text encoding of a CSV source, e.g. latin-1")
    missing_values: tuple[str, ...] = Field(
        MISSING_TOKENS, description="cell values read as missing (text columns and the target)"
    )
    max_unique_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="text columns with more distinct values than this share of their rows "
        "are identifier-like and left out (unless data.columns keeps them)",
    )
    positive_class: str | None = Field(
        None, description="binary only: the label that is the positive class (encoded as 1)"
    )
    rows: int | None = Field(
        None, ge=100, description="generated data sets (builtin:fraud): how many rows to make"
    )
    seed: int = Field(0, description="seed of generated data sets")
    batch: int | Literal["date"] = Field(
        0,
        description="generated data sets: which batch to draw (a fresh sample of the same "
        "process per number); `date`: one batch per UTC day, for scheduled retraining",
    )
    inject: InjectConfig = Field(
        InjectConfig(), description="drift injected into the data as read (drills, demos, tests)"
    )
    workspace: str = Field(
        "mlruns/workspace",
        description="where the per-run Parquet splits go: a folder, or an fsspec URL "
        "(s3://bucket/prefix) for workers on other machines; every Dask worker must read it",
    )


class SplitConfig(_Stage):
    """Train/valid/test split: fractions of all rows, stratified for classification."""

    valid: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> SplitConfig:
        if self.valid + self.test >= 0.9:
            raise ValueError(
                f"split.valid + split.test = {self.valid + self.test:g} leaves too few rows "
                "to train on; keep it below 0.9"
            )
        return self


class TrainConfig(_Stage):
    """XGBoost training. `params` go to XGBoost as they are (checked against XGBoost itself)."""

    num_boost_round: int = Field(200, ge=1, le=100_000)
    early_stopping_rounds: int | None = Field(20, ge=1)
    params: dict[str, Any] = Field(default_factory=dict, description="XGBoost parameters")
    auto_scale_pos_weight: bool = Field(
        False,
        description="binary data with under 10% positives gets scale_pos_weight = "
        "negatives/positives unless params set it (off: reweighting distorts the probabilities; "
        "the decision threshold is tuned instead)",
    )
    calibration: Literal["platt", "none"] = Field(
        "platt",
        description="binary: map the margin to calibrated probabilities with a logistic (Platt) "
        "fit on the valid split; the map travels with the model",
    )
    eval_auc: bool = Field(
        False, description="also evaluate AUC every round (about doubles training time)"
    )
    log_every: int = Field(25, ge=1, description="log training progress every N rounds")


FIGURES = (
    "loss_curves",
    "metric_curve",
    "confusion_matrix",
    "roc",
    "precision_recall",
    "calibration",
    "threshold",
    "importance",
    "correlation",
    "predicted_vs_true",
    "residuals",
    "qq",
    "class_balance",
)


class EvaluateConfig(_Stage):
    """Test-set evaluation: metrics, figures, tables."""

    threshold: float = Field(0.5, gt=0, lt=1, description="binary decision threshold")
    figures: str | tuple[str, ...] = Field(
        "all", description="which figures to make; `all` = every one that fits the task"
    )
    target_score: float = Field(
        0.9, description="target line on the per-round accuracy (or R²) curve"
    )
    max_points: int = Field(
        20_000, ge=100, description="scatter-type figures subsample (seeded) above this"
    )
    top_k: int = Field(20, ge=1, description="features in importance and correlation figures")
    sample_predictions: int = Field(200, ge=0, description="test rows in the predictions table")
    seed: int = 0

    @field_validator("figures")
    @classmethod
    def _known_figures(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        names = (value,) if isinstance(value, str) else value
        if value == "all":
            return value
        for name in names:
            _check_known(name, ("all", *FIGURES), "figure")
        return tuple(names)


class ExplainConfig(_Stage):
    """SHAP explanations (XGBoost's own TreeSHAP on the cluster)."""

    enabled: bool = True
    shap_rows: int | Literal["all"] = Field(
        2_000, description="test rows explained for the global figures (seeded, stratified)"
    )
    max_display: int = Field(15, ge=1, description="features shown in beeswarm and bar plots")
    dependence_top_k: int = Field(4, ge=0, description="dependence plots for the top-k features")
    top_risk: int = Field(5, ge=0, description="binary: local explanations of the riskiest rows")
    errors: int = Field(
        5,
        ge=0,
        description="most confident false positives and negatives (each), or the "
        "largest residuals (regression)",
    )
    random_rows: int = Field(5, ge=0, description="seeded random test rows explained locally")
    row_ids: tuple[int | str, ...] = Field((), description="test rows to explain, by their id")
    plot_rows: int = Field(
        5_000,
        ge=1,
        description="rows drawn in the global figures (a seeded sample of those explained)",
    )
    interaction_rows: int = Field(
        0, ge=0, description="SHAP interaction values for this many rows, as a heatmap (0: off)"
    )
    app_rows: int = Field(
        10_000,
        ge=0,
        description="raw test rows kept with the run for `glassbox app` to start from "
        "(data/test_rows.parquet; rare classes whole, the rest sampled; 0: none)",
    )
    lime: bool = Field(True, description="LIME for the rows explained locally, compared with SHAP")
    lime_samples: int = Field(5_000, ge=100, description="LIME's perturbed samples per row")
    lime_train_rows: int = Field(
        5_000, ge=10, description="training rows LIME's explainer learns its statistics from"
    )
    lime_features: int = Field(10, ge=1, description="features shown in LIME's pages")
    compare_top_k: int = Field(
        5,
        ge=1,
        description="top features compared between SHAP and LIME (at most a third of the "
        "features are compared)",
    )
    lime_min_score: float = Field(
        0.1,
        ge=0,
        le=1,
        description="rows whose LIME local fit R² is under this are marked untrusted and left "
        "out of the agreement metrics",
    )
    seed: int = 0

    @field_validator("shap_rows")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 'all' or a positive number of rows")
        return value


class ClusterConfig(_Stage):
    """The Dask cluster that trains: a local one (CUDA when there is a GPU) or an existing one."""

    kind: Literal["auto", "local", "cuda", "address"] = "auto"
    address: str | None = Field(None, description="scheduler address when kind is `address`")
    n_workers: int | None = Field(None, ge=1, description="default: 1 (CPU) or one per GPU")
    threads_per_worker: int | None = Field(None, ge=1, description="default: all cores")
    dashboard: bool = Field(
        False, description="serve the Dask dashboard on 127.0.0.1 (about 0.4 s more to start)"
    )

    @model_validator(mode="after")
    def _address_goes_with_kind(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("cluster.kind 'address' needs cluster.address (tcp://host:port)")
        if self.address and self.kind != "address":
            raise ValueError("cluster.address is set: set cluster.kind to 'address' too")
        return self


class TrackingConfig(_Stage):
    """MLflow: where runs, artifacts and registered models go."""

    uri: str = Field(
        default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE,
        description=f"tracking store; default: $MLFLOW_TRACKING_URI, else {DEFAULT_STORE}",
    )
    artifact_root: str | None = Field(
        None,
        description="artifact folder for new experiments (local stores); default: `artifacts` "
        "beside a sqlite store's file",
    )

    @property
    def artifact_folder(self) -> str:
        """`artifact_root`, or `artifacts` beside the sqlite file (mlruns/artifacts by default)."""
        if self.artifact_root:
            return self.artifact_root
        if self.uri.startswith("sqlite:///"):
            return str(Path(self.uri.removeprefix("sqlite:///")).parent / "artifacts")
        return "mlruns/artifacts"

    experiment: str | None = Field(None, description="default: glassbox-<data set name>")
    model_name: str | None = Field(
        None, description="registered model name; default: glassbox-<data set name>"
    )
    run_name: str | None = None
    ui_url: str | None = Field(
        None, description="MLflow UI base URL for links (default: the tracking URI if http)"
    )


Metric = Literal[
    "auto",
    "average_precision",
    "roc_auc",
    "log_loss",
    "brier_score",
    "f1_score",
    "accuracy_score",
    "balanced_accuracy_score",
    "matthews_corrcoef",
    "f1_macro",
    "roc_auc_macro",
    "root_mean_squared_error",
    "mean_absolute_error",
    "r2_score",
]


class DriftConfig(_Stage):
    """Drift of fresh data against the champion's training data, feature by feature."""

    psi: float = Field(
        0.2, gt=0, description="a feature drifted when its PSI reaches this (0.1-0.2: moderate)"
    )
    ks_pvalue: float = Field(
        0.01, gt=0, lt=1, description="numbers: or when the KS test's p-value is under this ..."
    )
    ks_statistic: float = Field(
        0.1, gt=0, le=1, description="... and the KS statistic (largest CDF gap) reaches this"
    )
    share: float = Field(
        0.1, gt=0, le=1, description="the data drifted when this share of the features drifted"
    )
    bins: int = Field(10, ge=2, le=100, description="quantile bins of the reference for PSI")
    action: Literal["warn", "block"] = Field(
        "warn", description="on drifted data: warn, or block the promotion (a person decides)"
    )
    skip_if_stable: bool = Field(
        False, description="skip training when no feature drifted (nothing new to learn)"
    )


class RetrainConfig(_Stage):
    """Champion/challenger promotion: the gate a retrained model must pass."""

    mode: Literal["enabled", "dry_run", "disabled"] = Field(
        "enabled",
        description="enabled: promote when the gate passes; dry_run: decide and report, move "
        "no alias; disabled: train and register only",
    )
    primary_metric: Metric = Field(
        "auto",
        description="the metric that must improve; auto: average_precision (binary, under 10% "
        "positives), roc_auc (binary), log_loss (multiclass), root_mean_squared_error",
    )
    min_improvement: float = Field(
        0.0, ge=0, description="the primary metric must improve by more than this (absolute)"
    )
    min_relative_improvement: float = Field(
        0.0, ge=0, description="... and by more than this share of the champion's value"
    )
    guardrails: dict[str, float] | None = Field(
        None,
        description="metric -> how much worse it may get, as a share of the champion's value; "
        "default per task (binary: roc_auc 0.01, log_loss 0.1; multiclass: f1_macro 0.02; "
        "regression: mean_absolute_error 0.05); {} for none",
    )
    floor: float | None = Field(
        None, description="a first champion must reach this on the primary metric"
    )
    confidence: float = Field(
        0.8,
        ge=0,
        lt=1,
        description="the challenger must win on the primary metric in this share of paired "
        "bootstrap resamples of the holdout (a gain inside the noise is no gain; 0: off)",
    )
    bootstrap: int = Field(200, ge=20, le=10_000, description="paired bootstrap resamples")
    drift: DriftConfig = DriftConfig()

    @field_validator("guardrails")
    @classmethod
    def _known_guardrails(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        names = [m for m in Metric.__args__ if m != "auto"]  # type: ignore[attr-defined]
        for name, tolerance in (value or {}).items():
            _check_known(name, names, "metric")
            if tolerance < 0:
                raise ValueError(f"tolerance of {name} must be >= 0")
        return value


class Dimension(_Stage):
    """One XGBoost parameter's range in a sweep: whole numbers or real numbers between `low`
    and `high` (on a log scale with `log: true`), or one of `values`."""

    type: Literal["int", "float", "choice"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = Field(False, description="sample on a log scale (low must be > 0)")
    values: tuple[Any, ...] | None = Field(None, description="type choice: the values to try")

    @model_validator(mode="after")
    def _consistent(self) -> Dimension:
        if self.type == "choice":
            if not self.values:
                raise ValueError("type choice needs `values`: a non-empty list")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("type choice takes `values`, not low/high/log")
            if len(set(map(repr, self.values))) != len(self.values):
                raise ValueError("type choice: `values` repeat")
            return self
        if self.values is not None:
            raise ValueError(f"type {self.type} takes low/high, not `values`")
        if self.low is None or self.high is None:
            raise ValueError(f"type {self.type} needs `low` and `high`")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got {self.low:g})")
        if self.type == "int" and not (float(self.low).is_integer() and self.high.is_integer()):
            raise ValueError("type int needs whole-number low and high")
        return self

    def describe(self) -> str:
        """`int 2..10`, `float 0.01..0.3 log`, `choice depthwise|lossguide`."""
        if self.type == "choice":
            return "choice " + "|".join(map(str, self.values or ()))
        return f"{self.type} {self.low:g}..{self.high:g}" + (" log" if self.log else "")


class SweepConfig(_Stage):
    """Hyperparameter search (`glassbox sweep`): trials in parallel on the cluster, each a
    single-threaded XGBoost training with early stopping, judged on the valid split."""

    space: dict[str, Dimension] | None = Field(
        None,
        description="XGBoost parameter -> {type: int|float|choice, low, high, log, values}; "
        "default: a space per task (tasks.sweep.DEFAULT_SPACE); these override train.params",
    )
    trials: int = Field(20, ge=1, le=10_000, description="trials to run")
    parallel: int | None = Field(
        None, ge=1, description="trials in flight at once; default: the cluster's worker threads"
    )
    timeout: float | None = Field(
        None, gt=0, description="seconds after which no new trial starts (running ones finish)"
    )
    metric: Metric = Field(
        "auto",
        description="valid-split metric to optimise; auto: the retraining gate's primary metric",
    )
    seed: int = Field(
        0, description="seed of the sampler (TPE): same seed, parallel 1, same trials"
    )
    refit: bool = Field(
        True,
        description="train the best trial's parameters as a normal run, register it, @challenger",
    )


class PipelineConfig(_Stage):
    """Everything one `train` (or `retrain`) flow run needs."""

    data: DataConfig
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    explain: ExplainConfig = ExplainConfig()
    cluster: ClusterConfig = ClusterConfig()
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    retrain: RetrainConfig = RetrainConfig()
    sweep: SweepConfig = SweepConfig()


def validate_config(raw: dict[str, Any]) -> PipelineConfig:
    """Validate a nested dict into a `PipelineConfig`, or raise `ConfigError` naming the keys.

    Unknown keys get a "did you mean" suggestion from the keys valid at that level.
    """
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `key: what is wrong (got value)`."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "config"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            valid = _valid_keys(loc[:-1])
            close = difflib.get_close_matches(loc[-1], valid, n=1)
            msg += f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(valid)})"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
        lines.append(f"{key}: {msg}")
    return "invalid config: " + "; ".join(lines)


def _valid_keys(path: list[str]) -> list[str]:
    model: type[BaseModel] = PipelineConfig
    for part in path:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
