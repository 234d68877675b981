"""The prepared rows: the columns `PrepareStage` writes, declared once, and the table made from its entries.

`PREPARED_COLUMNS` is the one list of those columns, in order: each with its Arrow type and how its value is
read from an output row's entry. `PrepareStage.OUTPUT_COLUMNS` (what the pipeline builder's wiring check
reads) are its names, and `prepared_table` builds exactly these columns.

An entry (made by `PrepareStage._task_row`) is one output row, a dict: `source` (the input row's position
in the batch), `task`, `question`, `decoded` (`DecodedMedia` or None), `pixels` (the tiles' bytes, shared by
the row's tasks), `input_ids`, `max_new_tokens`, `error`, and `page` = (page number, pages in the document)
for a document's page rows, else None.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

SIZE_TYPE = pa.list_(pa.struct([("width", pa.int32()), ("height", pa.int32())]))

# (entry, the input row's id) -> the column's value for that output row.
Value = Callable[[dict, str | None], object]


def _entry(key: str) -> Value:
    return lambda entry, row_id: entry[key]


def _media(get) -> Value:
    """A value of the row's decoded media; null for a row that has none (an error row)."""
    return lambda entry, row_id: None if entry["decoded"] is None else get(entry["decoded"])


def _video(get) -> Value:
    """A value of the row's sampled video frames; null for other rows."""
    return lambda entry, row_id: (
        None if entry["decoded"] is None or entry["decoded"].video is None else get(entry["decoded"].video)
    )


def _page(index: int) -> Value:
    """The page number (0) or the document's page count (1); null for rows that are no document's page."""
    return lambda entry, row_id: None if entry["page"] is None else entry["page"][index]


def _row_id(entry: dict, row_id: str | None) -> str | None:
    """A document page's rows are `<id>#p<n>`; other rows keep the input row's id."""
    return row_id if entry["page"] is None or row_id is None else f"{row_id}#p{entry['page'][0]}"


def _num_input_tokens(entry: dict, row_id: str | None) -> int | None:
    return None if entry["input_ids"] is None else len(entry["input_ids"])


# The columns written (added, or replacing the input's), in order: name, Arrow type, value.
PREPARED_COLUMNS: tuple[tuple[str, pa.DataType, Value], ...] = (
    ("id", pa.string(), _row_id),
    ("task", pa.string(), _entry("task")),
    ("question", pa.string(), _entry("question")),
    ("input_ids", pa.list_(pa.int32()), _entry("input_ids")),
    ("pixels", pa.large_binary(), _entry("pixels")),
    ("num_tiles", pa.list_(pa.int32()), _media(lambda d: d.num_tiles)),
    ("media_sizes", SIZE_TYPE, _media(lambda d: [{"width": w, "height": h} for w, h in d.sizes])),
    ("num_input_tokens", pa.int32(), _num_input_tokens),
    ("max_new_tokens", pa.int32(), _entry("max_new_tokens")),
    ("num_frames", pa.int32(), _video(lambda v: v.num_frames)),
    ("frame_indices", pa.list_(pa.int32()), _video(lambda v: v.frame_indices)),
    ("frame_timestamps", pa.list_(pa.float64()), _video(lambda v: v.timestamps)),
    ("page", pa.int32(), _page(0)),
    ("num_pages", pa.int32(), _page(1)),
    ("error", pa.string(), _entry("error")),
)
PREPARED_NAMES = tuple(name for name, _, _ in PREPARED_COLUMNS)


def prepared_table(batch: pa.Table, entries: list[dict], dropped: tuple[str, ...]) -> pa.Table:
    """The output rows of `entries` (of the input rows in `batch`): each one's input row with the columns
    `dropped` removed and `PREPARED_COLUMNS` written last, in their order."""
    table = batch.take(pa.array([e["source"] for e in entries], pa.int64()))
    ids = table.column("id").to_pylist()
    # One table built once (not a column at a time): this runs for every small batch, error rows included.
    replaced = set(PREPARED_NAMES) | set(dropped)
    kept = [f for f in table.schema if f.name not in replaced]
    written = [
        pa.array([value(e, row_id) for e, row_id in zip(entries, ids)], type_) for _, type_, value in PREPARED_COLUMNS
    ]
    fields = kept + [pa.field(name, type_) for name, type_, _ in PREPARED_COLUMNS]
    return pa.Table.from_arrays([table.column(f.name) for f in kept] + written, schema=pa.schema(fields))
