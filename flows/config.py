"""Config loading: a preset from `conf/` or a YAML file, plus dotted overrides, validated once."""

from __future__ import annotations

import enum
import functools
from pathlib import Path
from typing import Any

import yaml

from tasks.config import ConfigError, PipelineConfig, validate_config

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# The Prefect form offers the presets in conf/ as a drop-down: the files are the only list.
Preset = enum.Enum(  # type: ignore[misc]
    "Preset", {p.stem: p.stem for p in sorted(CONF_DIR.glob("*.yaml"))}, type=str
)


def preset_path(preset_or_file: str) -> Path:
    """`fraud`, `conf/fraud.yaml` or any YAML path -> the file."""
    if preset_or_file in Preset.__members__:
        return CONF_DIR / f"{preset_or_file}.yaml"
    path = Path(preset_or_file).expanduser()
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        raise ConfigError(
            f"config: '{preset_or_file}' is neither a preset ({', '.join(Preset.__members__)}) "
            "nor a YAML file"
        )
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path} must hold a mapping of stages (data:, train:, ...)")
    return raw


def parse_assignment(text: str) -> tuple[str, Any]:
    """`train.num_boost_round=50` -> ("train.num_boost_round", 50); values are YAML scalars."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set '{text}': expected key=value, e.g. train.num_boost_round=50")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        return key.strip(), value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy)."""
    out = _deep_copy(raw)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: '{part}' is a value, not a section")
            node = child
        node[leaf] = value
    return out


def _deep_copy(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


def load_config(
    preset_or_file: str = "default", overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    """Read a preset or YAML file, apply dotted overrides and validate the result.

    Raises:
        ConfigError: naming the file, key or value that is wrong.
    """
    raw = read_yaml(preset_path(preset_or_file))
    return validate_config(apply_overrides(raw, overrides or {}))


def preset_values(key: str) -> str:
    """`default 100, fraud 300, ...`: one config value of every preset, for the Prefect form's
    field descriptions (the form shows what an empty field means)."""
    return ", ".join(
        f"{name} {'its own' if flat.get(key) is None else flat[key]}"
        for name, flat in _presets_flat().items()
    )


@functools.cache
def _presets_flat() -> dict[str, dict[str, Any]]:
    """Every valid preset, flattened to dotted keys; read once per process (the flow modules
    ask for several fields at import)."""
    from tasks.tracking import flatten

    flat = {}
    for name in Preset.__members__:
        try:
            flat[name] = flatten(load_config(name).model_dump(mode="json"))
        except ConfigError:
            continue
    return flat


def experiment_name(cfg: PipelineConfig) -> str:
    """The MLflow experiment: `tracking.experiment`, or glassbox-<data set name>."""
    from tasks.datasets import dataset_name

    return cfg.tracking.experiment or f"glassbox-{dataset_name(cfg.data.source)}"


def model_name(cfg: PipelineConfig) -> str:
    """The registered model's name: `tracking.model_name`, or glassbox-<data set name>."""
    from tasks.datasets import dataset_name

    return cfg.tracking.model_name or f"glassbox-{dataset_name(cfg.data.source)}"
