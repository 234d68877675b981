"""Read stage: one manifest read unit -> request blocks holding only the work still to do.

Runs inside Ray Data's read tasks (`pipeline.ManifestDatasource`); callable without Ray. Per row: check it
(`manifest.rows`), drop it if it is a later occurrence of a duplicate id (positions from the scan), assign its
tasks, drop the (id, task) keys already done (`done_keys.ResultKeys` of earlier results: a result made from another version of the media, or with a config fingerprint the run does not accept, is not done), and resolve its media paths
only if something is left to do. Rows already done cost a parse and a hash lookup.

Columns out (`REQUEST_SCHEMA`): `id`, `source` (`<manifest>:<line>`), `media_kind`, `media` (absolute URIs;
an image held in the manifest itself is named `<manifest>:<line>#<n>`), `media_data` (those images' bytes, per
entry; null when every entry is a URI), `question`, `task`, `tasks` (the tasks still to do), `expression`,
`bound`, `num_segments`, `error` ("manifest: ..." / "task: ..." or null), `source_version` (the row's
`version`: a media root's object version); then the carried manifest columns
as `in.<name>` (pass-through and template columns, typed as settled for the job: `passthrough.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, NamedTuple, get_type_hints

import numpy as np
import pyarrow as pa

from internvl_batch.config import StorageConfig
from internvl_batch.done_keys import ResultKeys
from internvl_batch.errors import MANIFEST, ManifestError, RowError, format_row_error
from internvl_batch.manifest.requests import TaskAssigner, unit_chunks
from internvl_batch.manifest.rows import MediaResolver, ParsedRow
from internvl_batch.manifest.scan import MIXED
from internvl_batch.manifest.units import ReadUnit
from internvl_batch.passthrough import carried, to_type


class RequestRow(NamedTuple):
    """One request row: the request columns in order, each annotated with its Arrow type (`REQUEST_SCHEMA` is
    made from these), then the pass-through values by name. Built once by `request_row` and never edited (later
    stages work on the Arrow table)."""

    id: Annotated[str | None, pa.string()]
    source: Annotated[str | None, pa.string()]
    media_kind: Annotated[str, pa.string()]
    media: Annotated[tuple[str, ...], pa.list_(pa.string())]
    media_data: Annotated[tuple[bytes | None, ...] | None, pa.list_(pa.large_binary())]
    question: Annotated[str | None, pa.string()]
    task: Annotated[str | None, pa.string()]
    tasks: Annotated[list[str], pa.list_(pa.string())]
    expression: Annotated[str | None, pa.string()]
    bound: Annotated[tuple[float, float] | None, pa.list_(pa.float64())]
    num_segments: Annotated[int | None, pa.int32()]
    error: Annotated[str | None, pa.string()]
    source_version: Annotated[str | None, pa.string()]  # the media's version when read (output: `source_version`)
    passthrough: dict  # not a column: the carried manifest columns, `in.<name>` (`requests_table`)


# The request columns, made from RequestRow's annotated fields (all but `passthrough`), in their order.
REQUEST_SCHEMA = pa.schema(
    [
        (name, hint.__metadata__[0])
        for name, hint in get_type_hints(RequestRow, include_extras=True).items()
        if name != "passthrough"
    ]
)


class RequestReader:
    """Build once per read task; call with a unit, the done keys and the positions of duplicates to drop."""

    def __init__(
        self, storage: StorageConfig, assigner: TaskAssigner, passthrough_types: dict[str, object], rows_per_block: int
    ) -> None:
        self.storage = storage
        self.assigner = assigner
        self.passthrough_types = passthrough_types
        self.rows_per_block = rows_per_block

    def __call__(self, unit: ReadUnit, done_keys: ResultKeys | None, drop: np.ndarray | None) -> Iterator[pa.Table]:
        resolve = MediaResolver(unit.file.uri)
        pending: list[RequestRow] = []
        for chunk in unit_chunks(unit, self.storage, self.assigner, done_keys):
            dropped = np.isin(np.asarray(chunk.positions, np.uint64), drop) if drop is not None and len(drop) else None
            for i, row in enumerate(chunk.rows):
                if dropped is not None and dropped[i]:
                    continue
                start, stop = chunk.starts[i], chunk.starts[i + 1]
                tasks = [t for t, done in zip(chunk.tasks[i], chunk.done[start:stop]) if not done]
                if tasks:
                    pending.append(
                        request_row(
                            row,
                            tasks,
                            chunk.raws[i],
                            f"{unit.file.uri}:{chunk.numbers[i]}",
                            resolve,
                            self.passthrough_types,
                        )
                    )
                if len(pending) >= self.rows_per_block:
                    yield requests_table(pending, self.passthrough_types)
                    pending = []
        if pending:
            yield requests_table(pending, self.passthrough_types)


def request_row(
    row: ParsedRow, tasks: list[str], raw, source: str | None, resolve: MediaResolver, passthrough
) -> RequestRow:
    """One request row: the parsed row with its media resolved to absolute URIs and its tasks to do."""
    media, error, data = row.media, row.error, row.media_data
    try:  # also for a row that failed a check already: its `media` names what it pointed to, absolute
        media = tuple(
            resolve(uri) if data is None or data[k] is None else embedded_name(source or str(row.id), k, uri)
            for k, uri in enumerate(row.media)
        )
    except RowError as exc:
        error = error or format_row_error(MANIFEST, exc)
    if error is not None:
        data = None  # an error row carries no image
    values = {name: raw.get(name) if isinstance(raw, dict) else None for name in passthrough}
    return RequestRow(
        row.id,
        source,
        row.media_kind,
        media,
        data,
        row.question,
        row.task,
        tasks,
        row.expression,
        row.bound,
        row.num_segments,
        error,
        row.version,
        values,
    )


def embedded_name(source: str, index: int, name: str) -> str:
    """What the output's `media` says for an image held in the manifest: `<manifest>:<line>#<n>` (1-based), and
    the image's own file name when the manifest gives one (`#1:cat.jpg`)."""
    return f"{source}#{index + 1}" + (f":{name}" if name else "")


def requests_table(rows: list[RequestRow], passthrough_types: dict[str, object]) -> pa.Table:
    """Request rows as one Arrow table; the carried manifest columns as `in.<name>` (`passthrough.carried`),
    typed as settled for the whole job (`passthrough.settle_types`). A row with a value that does not fit its
    column's type becomes an error row naming the column (its value null), unless it already is one."""
    values = list(zip(*rows)) if rows else [()] * len(RequestRow._fields)
    columns = [pa.array(column, f.type) for column, f in zip(values, REQUEST_SCHEMA)]
    fields = list(REQUEST_SCHEMA)
    problems: dict[int, str] = {}
    for name, type_ in passthrough_types.items():
        cells = [r.passthrough.get(name) for r in rows]
        array, misfits = passthrough_array(cells, type_)
        for k in misfits:
            problems.setdefault(k, misfit_message(name, cells[k], type_))
        columns.append(array)
        fields.append(pa.field(carried(name), array.type))
    if problems:
        index = REQUEST_SCHEMA.get_field_index("error")
        errors = columns[index].to_pylist()
        for k, message in problems.items():
            if errors[k] is None:
                errors[k] = format_row_error(MANIFEST, ManifestError(message))
        columns[index] = pa.array(errors, pa.string())
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def passthrough_array(values: list, type_) -> tuple[pa.Array, list[int]]:
    """A carried column as `type_` (None: only nulls seen; MIXED: JSON text), and the positions of values that
    do not fit it."""
    if type_ is None:
        return pa.nulls(len(values)), []
    if type_ == MIXED:  # values of several types across the manifests (or runs): kept as JSON text
        return pa.array([None if v is None else json.dumps(v, default=str) for v in values], pa.string()), []
    return to_type(values, type_)


def misfit_message(name: str, value, type_) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return (
        f"pass-through column `{name}` holds {shown}, which does not fit its type in this output ({type_}, set "
        "by the values of its first run or of this run's manifests); correct the value, or write to a new output"
    )
