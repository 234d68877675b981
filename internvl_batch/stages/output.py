"""The output schema: one Parquet row per input row and task (per page of a PDF), typed, in a stable column order.

| column | type | meaning |
|---|---|---|
| id | string | the manifest row's id (`<file>:<line>` when the row had none); a PDF page's row: `<id>#p<n>` |
| status | string | `ok` or `error` |
| task | string | task of the row |
| question | string | the question asked (the default prompt when the row had none) |
| response | string | the model's answer; null on error |
| media | list<string> | media URIs, resolved (secret query values and `user:password@` shown as `REDACTED`) |
| num_tiles | list<int32> | tiles per image (thumbnail included) |
| num_input_tokens | int32 | prompt tokens (image tokens included) |
| num_output_tokens | int32 | generated tokens, the stop token included |
| finish_reason | string | `stop` (ended with <|im_end|>) or `length` (hit max_new_tokens) |
| media_sizes | list<struct<width, height>> | each image's size after EXIF orientation (video: the frame size) |
| boxes | list<struct<label, x1, y1, x2, y2>> | `ground` rows: boxes in pixels of the original image |
| parse_error | string | `ground`/`json` rows whose answer could not be fully parsed (the raw text stays in `response`) |
| num_frames | int32 | video rows: frames sampled; null otherwise |
| frame_indices | list<int32> | video rows: the sampled frame indices (decord's numbering) |
| frame_timestamps | list<float64> | video rows: the sampled frames' times in seconds (index / average fps) |
| page | int32 | document rows: the page (1-based); null otherwise and for a document that could not be read |
| num_pages | int32 | document rows: the document's number of pages |
| error | string | null on success, else `<stage>: <ErrorType>: <message>` |
| error_stage | string | the stage that failed (`errors.STAGES`: manifest, task, limits, fetch, decode, prompt, generate) |
| error_type | string | the error's type (`errors.py`: ManifestError, FetchError, ImageDecodeError, ...) |
| model | string | the model that answered |
| run_id | string | the run that wrote the row (sortable by time; the latest run's row is the current one) |
| parsed | typed from task.json_schema | `json` rows: the validated answer (only when the job has a json schema) |

Pass-through columns of `input.passthrough_columns` follow, unchanged, under their output names (a name the
output already has is refused when the config is read: `passthrough.py`).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from internvl_batch.errors import error_parts
from internvl_batch.redact import redact_column
from internvl_batch.stages.columns import carried

# Columns that hold URIs as given (presigned URLs, user:password@): written with their secrets REDACTED; the
# fetch used the full URI, which never leaves memory.
REDACTED_COLUMNS = ("media", "error")

OUTPUT_SCHEMA = pa.schema(
    [
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
        ("media_sizes", pa.list_(pa.struct([("width", pa.int32()), ("height", pa.int32())]))),
        (
            "boxes",
            pa.list_(
                pa.struct(
                    [
                        ("label", pa.string()),
                        ("x1", pa.float64()),
                        ("y1", pa.float64()),
                        ("x2", pa.float64()),
                        ("y2", pa.float64()),
                    ]
                )
            ),
        ),
        ("parse_error", pa.string()),
        ("num_frames", pa.int32()),
        ("frame_indices", pa.list_(pa.int32())),
        ("frame_timestamps", pa.list_(pa.float64())),
        ("page", pa.int32()),
        ("num_pages", pa.int32()),
        ("error", pa.string()),
        ("error_stage", pa.string()),
        ("error_type", pa.string()),
        ("model", pa.string()),
        ("run_id", pa.string()),
    ]
)


def output_schema(parsed_type: pa.DataType | None = None) -> pa.Schema:
    """The output columns of a job; `parsed` only when the job has a JSON schema (it fixes the type)."""
    return OUTPUT_SCHEMA.append(pa.field("parsed", parsed_type)) if parsed_type is not None else OUTPUT_SCHEMA


def to_output_table(
    table: pa.Table,
    model_name: str,
    passthrough: dict[str, str] | list[str],
    run_id: str | None = None,
    parsed_type: pa.DataType | None = None,
) -> pa.Table:
    """Select and type the output columns (missing ones become nulls), then the pass-through columns: each
    manifest column (carried as `in.<name>`) under its output name (a list: its own name). Output names are
    checked against the output's own when the config is read (`passthrough.clash_problem`); one that clashes
    anyway is a bug and fails here rather than replacing a column."""
    n = table.num_rows
    schema = output_schema(parsed_type)
    errors = table.column("error") if "error" in table.column_names else pa.nulls(n, pa.string())
    stages, types = error_parts(errors.to_pylist())
    arrays = []
    for field in schema:
        if field.name == "status":
            arrays.append(pc.if_else(pc.is_null(errors), "ok", "error").cast(pa.string()))
        elif field.name in ("error_stage", "error_type"):
            arrays.append(pa.array(stages if field.name == "error_stage" else types, pa.string()))
        elif field.name == "model":
            arrays.append(pa.repeat(pa.scalar(model_name, pa.string()), n) if n else pa.array([], pa.string()))
        elif field.name == "run_id":
            arrays.append(pa.repeat(pa.scalar(run_id, pa.string()), n) if n else pa.array([], pa.string()))
        elif field.name in REDACTED_COLUMNS and field.name in table.column_names:
            arrays.append(redact_column(table.column(field.name).cast(field.type)))
        elif field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    out = pa.Table.from_arrays(arrays, schema=schema)
    renames = passthrough if isinstance(passthrough, dict) else {name: name for name in passthrough}
    for source, name in renames.items():
        if name in out.column_names:
            raise ValueError(f"pass-through column {source!r} would replace the output's column {name!r}")
        values = table.column(carried(source)) if carried(source) in table.column_names else pa.nulls(n)
        out = out.append_column(name, values)
    return out
