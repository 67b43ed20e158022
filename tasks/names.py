"""File-name-safe forms of any text (feature, class and row names in artifact paths)."""

from __future__ import annotations

import re


def slug(name: str) -> str:
    """A file-name-safe form of any text (feature and class names in artifact paths)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "_"


def unique_slug(name: str) -> str:
    """A file-name-safe form of `name` that no other name shares: the slug, plus a short digest
    of the name whenever the slug had to change it (row ids `x/1` and `x_1` get files of their
    own)."""
    import hashlib

    base = slug(name)
    if base == name:
        return base
    return f"{base}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
