"""Whole-row problems found while reading a manifest, as values: `row_error` makes the `ManifestError` that
stands for a row (named by its own id when that id is usable), `text_problem` finds text that is not Unicode.

JSON may escape a lone surrogate (`"\\ud800"`), and tar member names that are not UTF-8 arrive with surrogate
escapes: such text cannot be encoded, hashed into a result key or written to Parquet, so a row holding it
becomes an error row naming the field, instead of stopping the scan or the write of a whole batch.
"""

from __future__ import annotations

import re

from internvl_batch.errors import ManifestError

_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(row: dict) -> str | None:
    """The first field of a parsed row whose name or text holds a lone surrogate, as a message; None if none."""
    for key, value in row.items():
        if holds_surrogate(key):
            return f"a field name ({ascii(key)}) is not valid Unicode text (it holds a lone surrogate)"
        if holds_surrogate(value):
            return f"`{key}` is not valid Unicode text (it holds a lone surrogate escape such as \\ud800)"
    return None


def holds_surrogate(value) -> bool:
    """Whether a string, or any string inside lists and dicts, holds a lone surrogate."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(holds_surrogate(k) or holds_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_surrogate(v) for v in value)
    return False


def row_error(message: str, row_id) -> ManifestError:
    """A whole row's `ManifestError`, carrying the row's id when that id itself is usable (`rows.checked_row`
    names the error row by it; otherwise the row gets its `<file>:<line>` name)."""
    error = ManifestError(message)
    usable = (isinstance(row_id, str) and row_id.strip() and not holds_surrogate(row_id)) or (
        isinstance(row_id, int) and not isinstance(row_id, bool)
    )
    error.row_id = str(row_id) if usable else None
    return error
