"""The file MLflow runs to load a registered Glassbox model ("models from code"): the model is
code plus data files (booster, card.json), so nothing is pickled and loading executes no stored
object. The model itself is `tracking.GlassboxModel`."""

import mlflow

from tasks.tracking import GlassboxModel

mlflow.models.set_model(GlassboxModel())
