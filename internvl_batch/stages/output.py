"""The output schema: one Parquet row per input row, typed, in a stable column order.

| column | type | meaning |
|---|---|---|
| id | string | the manifest row's id (`<file>:<line>` when the row had none) |
| status | string | `ok` or `error` |
| task | string | task of the row |
| question | string | the question asked (the default prompt when the row had none) |
| response | string | the model's answer; null on error |
| media | list<string> | media URIs, resolved |
| num_tiles | list<int32> | tiles per image (thumbnail included) |
| num_input_tokens | int32 | prompt tokens (image tokens included) |
| num_output_tokens | int32 | generated tokens, the stop token included |
| finish_reason | string | `stop` (ended with <|im_end|>) or `length` (hit max_new_tokens) |
| num_frames | int32 | video rows: frames sampled; null otherwise |
| frame_indices | list<int32> | video rows: the sampled frame indices (decord's numbering) |
| frame_timestamps | list<float64> | video rows: the sampled frames' times in seconds (index / average fps) |
| error | string | null on success, else `<stage>: <ExceptionType>: <message>` |
| model | string | the model that answered |
| run_id | string | the run that wrote the row (sortable by time; the latest run's row is the current one) |

Pass-through columns listed in `input.passthrough_columns` follow, unchanged.
"""

from __future__ import annotations

import pyarrow as pa

OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("status", pa.string()),
    ("task", pa.string()),
    ("question", pa.string()),
    ("response", pa.string()),
    ("media", pa.list_(pa.string())),
    ("num_tiles", pa.list_(pa.int32())),
    ("num_input_tokens", pa.int32()),
    ("num_output_tokens", pa.int32()),
    ("finish_reason", pa.string()),
    ("num_frames", pa.int32()),
    ("frame_indices", pa.list_(pa.int32())),
    ("frame_timestamps", pa.list_(pa.float64())),
    ("error", pa.string()),
    ("model", pa.string()),
    ("run_id", pa.string()),
])  # fmt: skip


def to_output_table(table: pa.Table, model_name: str, passthrough: list[str], run_id: str | None = None) -> pa.Table:
    """Select and type the output columns (missing ones become nulls), then the pass-through columns."""
    n = table.num_rows
    errors = table.column("error").to_pylist() if "error" in table.column_names else [None] * n
    arrays = []
    for field in OUTPUT_SCHEMA:
        if field.name == "status":
            arrays.append(pa.array(["ok" if e is None else "error" for e in errors], pa.string()))
        elif field.name == "model":
            arrays.append(pa.array([model_name] * n, pa.string()))
        elif field.name == "run_id":
            arrays.append(pa.array([run_id] * n, pa.string()))
        elif field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    out = pa.Table.from_arrays(arrays, schema=OUTPUT_SCHEMA)
    for name in passthrough:
        if name in OUTPUT_SCHEMA.names:
            continue
        out = out.append_column(name, table.column(name) if name in table.column_names else pa.nulls(n))
    return out
