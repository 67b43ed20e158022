"""Where the Dask workers read a run's Parquet splits: a local folder (the default) or any fsspec
URL (`s3://bucket/prefix`, `gcs://...`, `file:///mnt/shared/...`) when workers live on other
machines. Everything else a run writes stays in a local folder of its own.

Workers import this module (the probe): it imports fsspec, nothing of Prefect or MLflow.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from tasks.config import ConfigError


def is_url(location: str) -> bool:
    """`s3://...`, `file:///...`: an fsspec URL rather than a local path."""
    return "://" in location


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if is_url(base) else os.path.join(base, name)


def _fs(location: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(location)


def make_dir(location: str) -> None:
    fs, path = _fs(location)
    fs.makedirs(path, exist_ok=True)


def remove(location: str) -> None:
    """Remove a folder and everything in it; nothing if it is not there."""
    fs, path = _fs(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def parquet_schema(path: str) -> Any:
    """A Parquet file's schema, reading only its footer (local path or URL)."""
    import pyarrow.parquet as pq

    if not is_url(path):
        return pq.read_schema(path)
    import fsspec

    with fsspec.open(path, "rb") as handle:
        return pq.read_schema(handle)


def check_writable(location: str, key: str = "data.workspace") -> None:
    """This machine can write to and read back from `location` (a URL: its fsspec protocol is
    installed, the credentials work), checked with a probe file before anything runs.

    Raises:
        ConfigError: naming the key, the location and why.
    """
    if not is_url(location):
        return
    probe = join(location, f".probe-{uuid.uuid4().hex}")
    try:
        make_dir(location)
        fs, path = _fs(probe)
        fs.pipe_file(path, b"glassbox")
        ok = fs.cat_file(path) == b"glassbox"
        fs.rm_file(path)
    except (ImportError, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{key}: cannot write to {location}: {first}") from None
    if not ok:
        raise ConfigError(f"{key}: {location} did not return what was written to it")


def write_probe(folder: str) -> str:
    """A small file in `folder` that every worker must see; returns its location."""
    probe = join(folder, f".probe-{uuid.uuid4().hex}")
    if is_url(folder):
        fs, path = _fs(probe)
        fs.pipe_file(path, b"glassbox")
    else:
        with open(probe, "w") as out:
            out.write("glassbox")
    return probe


def sees(location: str) -> bool:
    """Run on a worker: whether it can read `location` (False when its protocol is missing)."""
    if not is_url(location):
        return os.path.isfile(location)
    try:
        fs, path = _fs(location)
        return bool(fs.cat_file(path) == b"glassbox")
    except Exception:
        return False


def remove_file(location: str) -> None:
    if is_url(location):
        fs, path = _fs(location)
        fs.rm_file(path)
    else:
        os.remove(location)
