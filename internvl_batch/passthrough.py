"""Pass-through columns: the user's manifest columns carried to the output, under which names and types.

Names. `input.passthrough_columns` maps a manifest column to its output name (a list maps each to itself). An
output name that the output already uses (`output_schema.py`: OUTPUT_SCHEMA, `parsed`) is refused when the
config is read, naming the clash and the rename that fixes it (`output_schema.clash_problem`): a user's column is never
overwritten or dropped without a word. Between the stages a carried column travels as `in.<manifest name>`
(`carried`), so that no user column can collide with the pipeline's own (`source`, `tasks`, `error`, ...);
the task template's columns travel the same way.

Types. Within a run, the scan settles one type per column over every manifest (`scan.unify_types`; MIXED:
several types, carried as JSON text). Across runs the output's type wins: a result file already written fixes
each column's type (`pinned_types` reads it from the newest file's schema; one footer), and this run's values
are converted to it (`settle_types`); a value that does not fit makes its row an error row naming the column
(`stages/read.requests_table`), so that every result file of an output has the same schema and every reader
can merge them.
"""

from __future__ import annotations

import pyarrow as pa

from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.manifest.scan import MIXED
from internvl_batch.output_schema import carried, clash_problem  # noqa: F401 - re-exported
from internvl_batch.results import result_files

# Manifest fields that request rows hold in columns of their own (`stages/read.py` REQUEST_SCHEMA).
REQUEST_FIELDS = ("id", "question", "task", "expression", "bound", "num_segments")


def template_columns(fields: list[str]) -> dict[str, str]:
    """Where a task template's fields are read from: a manifest field the request rows hold themselves (id,
    question, task, expression, bound, num_segments) from that column, any other from its carried column."""
    return {name: name if name in REQUEST_FIELDS else carried(name) for name in fields}


def pinned_types(output_path: str, storage, renames: dict[str, str]) -> dict[str, pa.DataType]:
    """The types the output's result files already give the pass-through columns (manifest column -> type),
    from the newest result file's schema; none when the output has no result file or a column is not in it
    (or only nulls were written: a null column takes any type later)."""
    import pyarrow.parquet as pq

    files = result_files(output_path, storage)
    if not files or not renames:
        return {}
    fs, _ = fsspec_filesystem(output_path, storage)
    # The newest run's file: names are part-<run_id>-..., and run ids sort by time (whatever folder, in an
    # output of the previous layout not moved yet, holds the file).
    newest = max(files, key=lambda file: file.rstrip("/").rsplit("/", 1)[-1])
    with fs.open(newest, "rb") as f:
        schema = pq.ParquetFile(f).schema_arrow
    pinned = {}
    for source, name in renames.items():
        if name in schema.names and not pa.types.is_null(schema.field(name).type):
            pinned[source] = schema.field(name).type
    return pinned


def settle_types(scanned: dict, pinned: dict[str, pa.DataType]) -> dict:
    """This run's type per carried column: the output's where it has one (`pinned`), else the scan's.

    A string column of the output takes this run's other values as JSON text (MIXED), as a run that saw several
    types writes them; any other type of the output is kept, and values are converted to it (or their rows
    become error rows)."""
    settled = dict(scanned)
    for name, type_ in pinned.items():
        if name not in settled:
            continue
        seen = settled[name]
        if pa.types.is_string(type_) or pa.types.is_large_string(type_):
            settled[name] = seen if seen in (None, MIXED) or pa.types.is_string(seen) else MIXED
        else:
            settled[name] = type_
    return settled


def to_type(values: list, type_: pa.DataType) -> tuple[pa.Array, list[int]]:
    """`values` (Python objects as read from a manifest) as an array of `type_`, and the positions of values
    that do not fit it (null there). Safe conversions only: 3 -> 3.0 and "7" -> 7, never 1.5 -> 1 or "7px"."""
    try:
        return pa.array(values, type_), []
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    try:
        return pa.array(values).cast(type_), []
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        pass
    out, bad = [], []
    for k, value in enumerate(values):
        try:
            out.append(pa.array([value]).cast(type_)[0].as_py() if value is not None else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            out.append(None)
            bad.append(k)
    return pa.array(out, type_), bad
