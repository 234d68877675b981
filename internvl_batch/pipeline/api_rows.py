"""The Python API's first stage: a user's rows -> request rows (`stages.rows_in.RowsStage`), every row with an id.

A manifest row without an id is named after where it is (`<manifest>:<line>`, the job's rule). A user's
dataset has no such place, so a row without an id (no `id` column, or a null in it) is named after what it
is: `row:<16 hex digits>`, a digest of the row's other columns (media bytes included). The same row gets the
same id on every call and in every process, so results can be joined back to their rows and, as in the
job, an embedded image is named `<id>#<n>` (never `None#1`). Identical rows get the same id: they are the
same request. Ids given as integers become their decimal text, as the manifest reader makes them.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from internvl_batch.stages.rows_in import RowsStage

ID_PREFIX = "row:"


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _plain(value):
    # json.dumps' fallback: bytes by their digest (an image is hashed, not copied into text), the rest as text.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes:" + _digest(bytes(value))
    return str(value)


def row_id(row: dict) -> str:
    """The id of a row without one: a digest of its columns (the id column left out), in a stable order."""
    others = {name: value for name, value in row.items() if name != "id"}
    return ID_PREFIX + _digest(json.dumps(others, sort_keys=True, default=_plain).encode())


def with_ids(batch: pa.Table) -> pa.Table:
    """`batch` with an id for every row (`row_id` where there is none). An id column of another type than
    text or integers is left as it is: the rows stage reports such ids as errors."""
    rows = batch.num_rows
    column = batch.column("id") if "id" in batch.column_names else pa.nulls(rows)
    kind = column.type
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if not (pa.types.is_null(kind) or pa.types.is_integer(kind) or text) or column.null_count == 0:
        return batch
    ids = column.cast(pa.string()).to_pylist() if not pa.types.is_null(kind) else [None] * rows
    missing = [i for i, value in enumerate(ids) if value is None]
    described = batch.drop_columns(["id"]) if "id" in batch.column_names else batch
    for i, row in zip(missing, described.take(missing).to_pylist()):
        ids[i] = row_id(row)
    filled = pa.array(ids, pa.string())
    if "id" in batch.column_names:
        return batch.set_column(batch.column_names.index("id"), pa.field("id", pa.string()), filled)
    return batch.append_column(pa.field("id", pa.string()), filled)


def rows_to_requests(batch: pa.Table, task_config, max_new_tokens: int, base_location: str | None) -> pa.Table:
    """One block of a user's rows -> request rows (a `map_batches` function); `base_location`: what relative
    media paths resolve against (`api.base_location`)."""
    return RowsStage(task_config, max_new_tokens, base_location)(with_ids(batch))
