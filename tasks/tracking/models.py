"""The model MLflow serves: Glassbox's pyfunc model (booster, preprocessing, calibration, label
names), its signature, logged into the run's experiment, and registered."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput
from mlflow.pyfunc import PythonModel

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class LoggedModel:
    uri: str
    model_id: str


class GlassboxModel(PythonModel):  # type: ignore[misc]
    """The registered model as MLflow serves it: raw rows in (strings, missing values, columns
    in any order, extra columns ignored), the training run's preprocessing applied
    (`tasks.serving`), labels by name out; `params={"predict_method": "predict_proba"}` gives
    a probability column per class."""

    def load_context(self, context: Any) -> None:
        import json

        import xgboost as xgb

        from tasks.serving import ModelCard

        self.card = ModelCard.from_json(Path(context.artifacts["card"]).read_text())
        self.booster = xgb.Booster(model_file=context.artifacts["booster"])
        # The drift check's summary of the training data (models logged before it have none).
        ref = context.artifacts.get("reference")
        self.reference = json.loads(Path(ref).read_text()) if ref else None
        # The raw inputs as training saw them (`glassbox app`'s form; older models have none).
        inputs = context.artifacts.get("inputs")
        self.inputs = json.loads(Path(inputs).read_text()) if inputs else None

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> Any:
        import pandas as pd

        from tasks import serving

        rows = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        method = (params or {}).get("predict_method", "predict")
        return serving.predict(self.booster, self.card, rows, method)


def model_signature(card: Any) -> Any:
    """The raw input as a user has it (one column per raw column the model reads, its type as
    loaded), the output (labels, or values), and the `predict_method` parameter."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec(AnyType() if c.raw_type == "any" else c.raw_type, c.name)
            for c in card.spec.columns
        ]
    )
    outputs = Schema([ColSpec(_label_type(card))])
    params = ParamSchema([ParamSpec("predict_method", "string", "predict")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _label_type(card: Any) -> str:
    """The served output's type: values, or the labels' own type (ints stay ints)."""
    if card.task == "regression":
        return "double"
    labels = card.labels or card.classes
    if all(isinstance(v, bool) for v in labels):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        return "long"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in labels):
        return "double"
    return "string"


def log_glassbox_model(
    run_id: str,
    booster_path: str,
    card: Any,
    input_example: pd.DataFrame,
    *,
    metadata: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
) -> LoggedModel:
    """Log the pyfunc model (booster in XGBoost's UBJSON format + the model card) into the
    run's own experiment and artifact location, linked to the run (registered separately, once
    the run has everything: `register_model`).

    Requirements are given explicitly: MLflow's inference of them costs seconds per model.
    The `tasks` package travels with the model (`code_paths`), so serving needs no install
    of Glassbox.
    """
    import tempfile

    import numpy as np
    import pandas as pd
    import pydantic
    import xgboost as xgb

    import tasks

    client = MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    # Created here so the model lands in the run's experiment: `log_model` alone files it
    # under the active experiment, which is "Default" in a flow.
    model = client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The signature below is explicit: MLflow's hints about type-hinted predict methods
        # do not apply.
        warnings.filterwarnings("ignore", message=".*[Tt]ype hint")
        card_path = Path(tmp) / "card.json"
        card_path.write_text(card.to_json())
        artifacts = {"booster": booster_path, "card": str(card_path)}
        import json

        for key, summary in (("reference", reference), ("inputs", inputs)):
            if summary:
                path = Path(tmp) / f"{key}.json"
                path.write_text(json.dumps(summary))
                artifacts[key] = str(path)
        info = mlflow.pyfunc.log_model(
            name="model",
            # Models from code: MLflow runs this file at load time instead of unpickling.
            python_model=str(Path(tasks.__file__).parent / "mlflow_model.py"),
            artifacts=artifacts,
            code_paths=[str(Path(tasks.__file__).parent)],
            signature=model_signature(card),
            input_example=input_example,
            metadata=metadata,
            model_id=model.model_id,
            pip_requirements=[
                f"xgboost=={xgb.__version__}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
                f"pydantic=={pydantic.__version__}",
            ],
        )
    # The run page lists a run's models from its outputs: `log_model` links them only for an
    # active (fluent) run, which a flow does not have.
    client.log_outputs(run_id, models=[LoggedModelOutput(model.model_id, step=0)])
    return LoggedModel(uri=info.model_uri, model_id=model.model_id)


def register_model(model_uri: str, name: str) -> str:
    """A new version of registered model `name` from a logged model; returns the version."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        version = mlflow.register_model(model_uri, name)
    return str(version.version)
