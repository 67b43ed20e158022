"""User text (class labels, category values) inside the `<script>` blocks of third-party HTML
pages (LIME's, shap's force plots). Those libraries write it with `json.dumps`, which leaves
`</script>` as it is: a label could close the script and open one of its own.

The text goes into the library with every `<` as a private-use stand-in, and the finished page
gets the stand-in as the JSON escape `\\u003c`, which the page's script reads back as `<`: the
label shows as it is and can never close a tag. Pure; imported on the Dask workers.
"""

from __future__ import annotations

STAND_IN = "\ue000"


def shield(text: str) -> str:
    """`text` as it may enter a page generator."""
    return str(text).replace("<", STAND_IN)


def unshield(text: str) -> str:
    """Shielded text back as the user wrote it (for charts and JSON files)."""
    return str(text).replace(STAND_IN, "<")


def safe_page(page: str) -> str:
    """A generated page with every shielded `<` as an escape that cannot close a tag. The stand-in
    only occurs inside the library's JSON string literals, where `\\u003c` means `<`."""
    return page.replace(STAND_IN, "\\u003c")
