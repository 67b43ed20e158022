"""The Glassbox `train` flow: load → split → XGBoost on Dask → evaluate → log model, in MLflow.

One MLflow run per flow run, tagged with the Prefect flow-run id; the Prefect run gets a markdown
artifact pointing back at it. The configuration is validated (and XGBoost's parameters checked)
before any compute; a run that fails ends FAILED in MLflow with the reason as a tag.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.config import Preset, experiment_name, load_config, model_name, preset_values
from tasks import flow_exit, platform, tracking
from tasks.cluster import background_cluster, check_shared_folder
from tasks.config import ConfigError, PipelineConfig
from tasks.data import EXAMPLE_FILE, Loaded, load_data, preload, record_data, write_splits
from tasks.datasets import check_source, dataset_name
from tasks.evaluate import evaluate_model
from tasks.explain import explain_model
from tasks.metrics import HEADLINE
from tasks.storage import check_writable
from tasks.train import log_model, register_model, train_model
from tasks.xgb_checks import check_objective, check_params


class _NoUserErrorTraceback(logging.Filter):
    """A bad input is reported in one line by the CLI; Prefect need not print its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConfigError):
            record.exc_info = None
            record.exc_text = None
        return True


def hide_tracebacks_of_user_errors() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_NoUserErrorTraceback())


# A bad input reads as one line in the run's log and state message, from the CLI and from a
# deployment run alike.
hide_tracebacks_of_user_errors()
# Every flow run (train, and retrain and sweep, which import this module) ends when its work is
# done, not on its heartbeat thread's next whole second (`tasks.flow_exit`).
flow_exit.install()


def _end_mlflow_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Crash/cancellation hook: a flow that dies outside Python's control still ends its run."""
    try:
        tracking.configure(_config_from_parameters(flow_run.parameters).tracking)
        tracking.mark_failed(str(flow_run.id), f"Prefect flow run {state.name}: {state.message}")
    except Exception as exc:  # a hook must not mask the original failure
        print(f"glassbox: could not mark the MLflow run failed: {exc}")


def _config_from_parameters(params: dict[str, Any]) -> PipelineConfig:
    named = {
        "data.source": params.get("data_source"),
        "data.target": params.get("target"),
        "train.num_boost_round": params.get("num_boost_round"),
        "train.params.max_depth": params.get("max_depth"),
        "train.params.learning_rate": params.get("learning_rate"),
    }
    preset = params.get("preset") or "default"
    preset = getattr(preset, "value", preset)
    # An empty form field means "as the preset says"; `overrides` may set None on purpose.
    chosen = {k: v for k, v in named.items() if v is not None}
    cfg = load_config(
        params.get("config_file") or preset, {**(params.get("overrides") or {}), **chosen}
    )
    # While `glassbox up` runs: its standing cluster and its MLflow UI address for links.
    return platform.for_run(cfg, platform.running())


def _empty_means(what: str, key: str) -> Any:
    """A form field's default, with a description saying what an empty field means for every
    preset (Prefect takes descriptions from a default `Field`, constraints from the type)."""
    return Field(None, description=f"{what}. Empty: the preset's ({preset_values(key)}).")


# The Prefect form: typed fields whose constraints the UI and the server check before a run is
# created.
Rounds = Annotated[int | None, Field(ge=1, le=100_000)]
Depth = Annotated[int | None, Field(ge=1, le=64)]
Eta = Annotated[float | None, Field(gt=0, le=1)]
PRESET = Field(
    Preset.default,  # type: ignore[attr-defined]
    description="a configuration preset from conf/; its data: " + preset_values("data.source"),
)
SOURCE = _empty_means("`builtin:<name>` or a .csv/.parquet path on the worker", "data.source")
TARGET = _empty_means("the target column", "data.target")
ROUNDS = _empty_means("maximum boosting rounds", "train.num_boost_round")
DEPTH = _empty_means("maximum tree depth", "train.params.max_depth")
ETA = _empty_means("XGBoost learning rate, eta", "train.params.learning_rate")


@flow(name="train", on_crashed=[_end_mlflow_run], on_cancellation=[_end_mlflow_run])
def train(
    preset: Preset = PRESET,  # type: ignore[valid-type]
    data_source: str | None = SOURCE,
    target: str | None = TARGET,
    num_boost_round: Rounds = ROUNDS,
    max_depth: Depth = DEPTH,
    learning_rate: Eta = ETA,
    overrides: dict[str, Any] | None = None,
    config_file: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate and register an XGBoost model, with everything logged to MLflow.

    Args:
        preset: a configuration preset from conf/.
        data_source: `builtin:<name>` or a .csv/.parquet path on the worker (preset's if empty).
        target: the target column (preset's if empty).
        num_boost_round: maximum boosting rounds (preset's if empty).
        max_depth: maximum tree depth (preset's if empty).
        learning_rate: XGBoost learning rate, eta (preset's if empty).
        overrides: any other config values by dotted key, e.g. {"split.test": 0.25}.
        config_file: a YAML config file on the worker, used instead of the preset.

    Returns:
        The MLflow run id, experiment id, UI link, registered model version and test metrics.
    """
    cfg = _config_from_parameters(
        {
            "preset": preset,
            "data_source": data_source,
            "target": target,
            "num_boost_round": num_boost_round,
            "max_depth": max_depth,
            "learning_rate": learning_rate,
            "overrides": overrides,
            "config_file": config_file,
        }
    )
    return run_pipeline(cfg)


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """The DAG for one validated configuration."""
    return train_loaded(cfg, check_and_load(cfg))


def check_and_load(cfg: PipelineConfig) -> Loaded:
    """Everything checked that can be without training (the tracking store answers and takes
    files); the data read, validated and split before a cluster starts or an MLflow run exists:
    a bad input leaves the store as it was."""
    check_params(cfg.train.params)
    check_objective(cfg.data.task, cfg.train.params)
    check_source(cfg.data)
    check_writable(cfg.data.workspace)
    tracking.check_store(cfg.tracking, experiment_name(cfg))
    loaded = load_data(cfg.data, cfg.split, cfg.explain.row_ids if cfg.explain.enabled else ())
    check_objective(loaded.info.task, cfg.train.params)
    return loaded


def train_loaded(
    cfg: PipelineConfig, loaded: Loaded, extra_tags: dict[str, str] | None = None
) -> dict[str, Any]:
    """Train, evaluate, explain, log and register a model on data already loaded."""
    info = loaded.info
    name = dataset_name(cfg.data.source)
    tags = {
        tracking.PREFECT_RUN_TAG: str(runtime.flow_run.id),
        "prefect.flow_run_name": str(runtime.flow_run.name),
        "prefect.deployment": str(runtime.deployment.name or ""),
        "glassbox.data": name,
        **_prefect_link(),
        **(extra_tags or {}),
    }
    tracking.configure(cfg.tracking)
    for orphan in tracking.end_orphaned_runs():
        get_run_logger().warning("MLflow run %s was left RUNNING by a dead process: FAILED", orphan)
    # The cluster's processes start while MLflow's store opens, the run is set up and the data
    # is written and logged.
    with (
        background_cluster(cfg.cluster) as starting,
        tracking.mlflow_run(
            cfg.tracking,
            experiment=experiment_name(cfg),
            # One name for the run in both UIs.
            run_name=cfg.tracking.run_name or str(runtime.flow_run.name),
            tags=tags,
        ) as run,
        _workspace(cfg.data.workspace, str(runtime.flow_run.id)) as (workspace, shared),
    ):
        tracking.log_params(run.run_id, tracking.flatten(cfg.model_dump(mode="json")))
        card = _report(run, cfg)
        splitting = write_splits.submit(loaded, workspace, shared)
        # The data set is logged while the workers read the splits and the model trains.
        recording = record_data.submit(
            loaded, workspace, run.run_id, cfg.explain.app_rows, cfg.split.seed
        )
        cluster = starting.result()
        if cluster.note:
            get_run_logger().warning(cluster.note)
        check_shared_folder(cluster, shared)
        if cluster.dashboard:
            get_run_logger().info(
                "Dask dashboard (%s, %s): %s", cluster.kind, cluster.device, cluster.dashboard
            )
        splits = splitting.result()
        on_workers = preload(cluster, splits, info, ("train", "valid"))
        trained = train_model(cluster, info, splits, cfg.train, workspace, run.run_id, on_workers)
        del on_workers  # the workers let go of the train and valid rows
        # Logging the model needs no cluster: it runs while the test set is evaluated.
        logging = log_model.submit(
            trained,
            info,
            str(Path(workspace) / EXAMPLE_FILE),
            cfg.evaluate.threshold,
            run.run_id,
            splits["train"],
            loaded.inputs,
        )
        explaining = (
            explain_model.submit(
                cluster,
                trained,
                info,
                splits,
                cfg.explain,
                cfg.evaluate.threshold,
                workspace,
                run.run_id,
            )
            if cfg.explain.enabled
            else None
        )
        evaluated = evaluate_model(cluster, trained, info, splits, cfg.evaluate, run.run_id)
        scores = evaluated["metrics"]
        logged = logging.result()
        recording.result()
        explained = explaining.result() if explaining else {"figures": []}
        registered = model_name(cfg)
        version = register_model(logged, registered)
        result = {
            "run_id": run.run_id,
            "experiment_id": run.experiment_id,
            "url": run.url,
            "model_uri": logged.uri,
            "registered_model": registered,
            "model_version": version,
            "metrics": scores,
            "headline": {k: scores[k] for k in HEADLINE[info.task] if k in scores},
            "figures": evaluated["figures"] + explained["figures"],
        }
        _report(run, cfg, result, card)
    return result


@contextmanager
def _workspace(location: str, run: str) -> Iterator[tuple[str, str]]:
    """The run's local folder (the model file, the example, SHAP values) and where its Parquet
    splits go for the workers: the same folder, or `<URL>/<run>` when `data.workspace` is an
    fsspec URL (the local folder is then under the default `mlruns/workspace`). Both are removed
    however the run ends; local folders that runs killed outright left behind go first."""
    from tasks import processes, storage
    from tasks.config import DataConfig

    url = storage.is_url(location)
    local_root = DataConfig.model_fields["workspace"].default if url else location
    path = Path(local_root).resolve() / run
    for gone in processes.sweep_workspaces(path.parent):
        get_run_logger().warning("Removed the workspace of a run whose process died: %s", gone)
    path.mkdir(parents=True, exist_ok=True)
    processes.claim(path)
    shared = storage.join(location, run) if url else str(path)
    try:
        if url:
            storage.make_dir(shared)
        yield str(path), shared
    except BaseException:
        _keep_model(path)
        raise
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if url:
            try:
                storage.remove(shared)
            except Exception as exc:  # the run's outcome stands; say what is left behind
                get_run_logger().warning("Could not remove the splits at %s: %s", shared, exc)


def _keep_model(workspace: Path) -> None:
    """A run that fails after training (the store full or gone while logging the model) keeps
    the trained booster and its model card (preprocessing, classes, threshold, calibration)
    beside the workspaces, and says where: hours of training are not lost with the workspace.
    `tasks.serving.predict(xgb.Booster(model_file=...), ModelCard.from_json(...), rows)`
    scores raw rows with them."""
    model = workspace / "model.ubj"
    if not model.exists():
        return
    kept = workspace.parent / "kept" / workspace.name
    try:
        kept.mkdir(parents=True, exist_ok=True)
        for name in ("model.ubj", "card.json"):
            if (workspace / name).exists():
                shutil.copy2(workspace / name, kept / name)
    except OSError as exc:
        get_run_logger().error("The trained model could not be kept either: %s", exc)
        return
    get_run_logger().error("The run failed after training; its model is kept in %s", kept)


def _prefect_link() -> dict[str, str]:
    """MLflow tags that link a run back to its Prefect flow-run page (a description the MLflow
    UI shows as markdown on the run page), when a standing Prefect server has a UI to link to."""
    ui = prefect_ui_url()
    if ui is None:
        return {}
    url = platform.flow_run_url(ui, str(runtime.flow_run.id))
    return {
        "prefect.flow_run_url": url,
        "mlflow.note.content": f"Prefect flow run [{runtime.flow_run.name}]({url})"
        + (f", deployment `{runtime.deployment.name}`" if runtime.deployment.name else ""),
    }


def prefect_ui_url() -> str | None:
    """The Prefect UI's address when runs talk to a standing server (not a temporary one)."""
    import os

    from prefect.settings import get_current_settings

    from tasks.processes import TEMPORARY_ENV

    if not os.environ.get("PREFECT_API_URL") or os.environ.get(TEMPORARY_ENV):
        return None  # a temporary server has no UI to link to
    ui = get_current_settings().ui_url
    return str(ui) if ui else None


def _report(
    run: tracking.RunRef,
    cfg: PipelineConfig,
    result: dict[str, Any] | None = None,
    card: Any = None,
) -> Any:
    """The Prefect run's one card pointing at its MLflow run: made at the start (so the link is
    there while the run trains), filled in with the headline results at the end. Returns the
    card's id."""
    where = (
        f"[open the run in MLflow]({run.url}) · [figures and files]({run.url}/artifacts)"
        + (
            f" · [explanations]({run.url}/artifacts/explanations/index.html)"
            if cfg.explain.enabled
            else ""
        )
        if run.url
        else f"`mlflow ui --backend-store-uri {cfg.tracking.uri}`, then experiment "
        f"{run.experiment_id}, run `{run.run_id}`; files in `{run.artifact_uri}`"
    )
    lines = [f"## MLflow run `{run.run_id}`", "", f"Experiment {run.experiment_id}: {where}"]
    if result:
        lines += [
            "",
            f"Registered model **{result['registered_model']}** version {result['model_version']}",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.4g} |" for k, v in result["headline"].items()]
        artifacts = f"[artifacts]({run.url}/artifacts)" if run.url else "artifacts"
        lines += [
            "",
            f"All {len(result['metrics'])} test metrics are in the MLflow run; figures in its "
            f"{artifacts}: " + ", ".join(f"`{f}`" for f in result["figures"]),
        ]
    markdown = "\n".join(lines)
    if card is not None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactUpdate

        with get_client(sync_client=True) as client:
            client.update_artifact(card, ArtifactUpdate(data=markdown))
        return card
    return create_markdown_artifact(
        key="mlflow-run", markdown=markdown, description="MLflow run of this flow run"
    )
