"""The registry: aliases, version tags and a promotion history per registered model; finding,
loading and describing versions and the runs behind them."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
from mlflow import MlflowClient

if TYPE_CHECKING:
    pass


HISTORY_TAG = "glassbox.history."


def alias_version(name: str, alias: str) -> str | None:
    """The version `models:/<name>@<alias>` points at, or None (no such alias or model)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, alias, version)


def set_version_tags(name: str, version: str, tags: Mapping[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def append_history(name: str, event: Mapping[str, Any]) -> None:
    """One more entry in the model's promotion history: a registered-model tag per event
    (`glassbox.history.00007`), so the history outlives versions and aliases (MLflow keeps no
    alias history by itself). Callers hold the promotion lock, so numbering is race-free."""
    import json
    from datetime import UTC, datetime

    client = MlflowClient()
    tags = client.get_registered_model(name).tags
    number = 1 + max(
        (int(k.removeprefix(HISTORY_TAG)) for k in tags if k.startswith(HISTORY_TAG)), default=0
    )
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **event}
    text = json.dumps(entry, default=str)
    if len(text) > 4900:  # a tag's value holds 5,000 characters
        entry["reasons"] = [r[:200] for r in entry.get("reasons", [])][:10]
        text = json.dumps(entry, default=str)[:4900]
    client.set_registered_model_tag(name, f"{HISTORY_TAG}{number:05d}", text)


def history(name: str) -> list[dict[str, Any]]:
    """The model's promotion history, oldest first."""
    import json

    tags = MlflowClient().get_registered_model(name).tags
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(HISTORY_TAG))]


@dataclass(frozen=True)
class VersionInfo:
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created: int
    metrics: dict[str, float]


def model_versions(name: str) -> list[VersionInfo]:
    """Every version of a registered model, newest first, with its aliases, tags and its
    training run's test metrics."""
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    # Version search results carry no aliases on every store; the model holds them all.
    by_version: dict[str, list[str]] = {}
    for alias, number in client.get_registered_model(name).aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    out = []
    for v in sorted(versions, key=lambda v: -int(v.version)):
        metrics: dict[str, float] = {}
        if v.run_id:
            with suppress(MlflowException):
                metrics = dict(client.get_run(v.run_id).data.metrics)
        out.append(
            VersionInfo(
                str(v.version),
                v.run_id,
                tuple(sorted(by_version.get(str(v.version), []))),
                dict(v.tags),
                v.creation_timestamp,
                metrics,
            )
        )
    return out


def registered_models() -> list[str]:
    return sorted(m.name for m in MlflowClient().search_registered_models())


def model_exists(name: str, version: str | None = None) -> bool:
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        if version is None:
            client.get_registered_model(name)
        else:
            client.get_model_version(name, version)
    except MlflowException:
        return False
    return True


@dataclass
class LoadedModel:
    """A registered model as MLflow loads it (`pyfunc`), with what Glassbox keeps inside it."""

    uri: str
    version: str
    run_id: str | None
    pyfunc: Any
    card: Any  # tasks.serving.ModelCard
    booster: Any
    reference: dict[str, Any] | None  # the drift check's summary of its training data
    inputs: dict[str, Any] | None = None  # the raw inputs as training saw them


def load_registered(name: str, version: str) -> LoadedModel:
    """`models:/<name>/<version>` through the registry, as a server would load it."""
    uri = f"models:/{name}/{version}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = mlflow.pyfunc.load_model(uri)
    inner = model.unwrap_python_model()
    run_id = MlflowClient().get_model_version(name, version).run_id
    return LoadedModel(
        uri,
        version,
        run_id,
        model,
        inner.card,
        inner.booster,
        getattr(inner, "reference", None),
        getattr(inner, "inputs", None),
    )


@dataclass(frozen=True)
class ModelRef:
    """Which model a user asked for, resolved: where MLflow loads it from, its registry entry
    (if any) and the run that trained it."""

    uri: str
    name: str | None
    version: str | None
    run_id: str | None
    aliases: tuple[str, ...] = ()
    note: str = ""  # said on the page: e.g. the champion was asked for and there is none


def resolve_model(asked: str | None, default_name: str) -> ModelRef:
    """`models:/<name>@<alias>`, `models:/<name>/<version>`, an MLflow run id, or (None) the
    champion of `default_name`, else its latest version (with a note saying so).

    Raises:
        ConfigError: naming what is not there (model, alias, version or run).
    """
    from mlflow.exceptions import MlflowException

    from tasks.config import ConfigError

    client = MlflowClient()
    where = mlflow.get_tracking_uri()
    note = ""
    if asked and not asked.startswith("models:/"):
        try:
            run = client.get_run(asked)
        except MlflowException:
            raise ConfigError(
                f"model: '{asked}' is neither a models:/ URI nor a run id in {where}"
            ) from None
        versions = client.search_model_versions(f"run_id = '{asked}'")
        if versions:
            v = max(versions, key=lambda v: int(v.version))
            return _version_ref(v.name, str(v.version), note)
        outputs = run.outputs.model_outputs if run.outputs else []
        if not outputs:
            raise ConfigError(f"model: run {asked} logged no model")
        return ModelRef(f"models:/{outputs[-1].model_id}", None, None, asked)
    if asked is None:
        name, alias = default_name, "champion"
    else:
        body = asked.removeprefix("models:/")
        name, _, rest = body.partition("@") if "@" in body else (body, "", "")
        if "@" in body:
            alias = rest
        else:
            name, _, version = body.rpartition("/")
            if not name or not version.isdigit():
                raise ConfigError(
                    f"model: '{asked}' is not models:/<name>@<alias> or models:/<name>/<version>"
                )
            if not model_exists(name, version):
                raise ConfigError(f"model: {name} has no version {version} in {where}")
            return _version_ref(name, version, note)
    if not model_exists(name):
        known = ", ".join(registered_models()) or "none yet; run `glassbox train`"
        raise ConfigError(f"model: no registered model '{name}' in {where} (models: {known})")
    found = alias_version(name, alias)
    if found is None:
        if asked is not None:
            raise ConfigError(f"model: {name} has no alias @{alias}")
        latest = model_versions(name)
        if not latest:
            raise ConfigError(f"model: {name} has no versions")
        found = latest[0].version
        note = f"{name} has no @champion yet: this is its latest version, {found}."
    return _version_ref(name, found, note)


def _version_ref(name: str, version: str, note: str) -> ModelRef:
    client = MlflowClient()
    v = client.get_model_version(name, version)
    aliases = tuple(
        sorted(a for a, n in client.get_registered_model(name).aliases.items() if str(n) == version)
    )
    return ModelRef(f"models:/{name}/{version}", name, version, v.run_id, aliases, note)


def load_pyfunc(uri: str) -> Any:
    """The Glassbox model behind a models:/ URI, as MLflow loads it (its `GlassboxModel`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.pyfunc.load_model(uri).unwrap_python_model()


def run_summary(run_id: str) -> dict[str, Any]:
    """A run's name, experiment, metrics and params, for a model card."""
    run = MlflowClient().get_run(run_id)
    return {
        "name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "metrics": dict(run.data.metrics),
        "params": dict(run.data.params),
    }


def run_artifact(run_id: str, artifact_path: str, dst: str | Path) -> Path | None:
    """One artifact of a run downloaded into `dst`, or None when the run has no such file."""
    import os

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
            )
        )
    except (MlflowException, OSError):
        return None


def run_link(run_id: str, ui_url: str | None) -> str | None:
    """The MLflow UI page of a run, when a UI address is known."""
    if not ui_url:
        return None
    exp = MlflowClient().get_run(run_id).info.experiment_id
    return f"{ui_url.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"
