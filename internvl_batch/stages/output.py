"""Output rows: the generated rows (or their errors) as the output schema's columns (`output_schema.py`, which
lists them), with the pass-through columns after them under their output names.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from internvl_batch.errors import error_parts
from internvl_batch.output_schema import OUTPUT_SCHEMA, carried
from internvl_batch.redact import redact_column

# Columns that hold URIs as given (presigned URLs, user:password@): written with their secrets REDACTED; the
# fetch used the full URI, which never leaves memory.
REDACTED_COLUMNS = ("media", "error")


def output_schema(parsed_type: pa.DataType | None = None) -> pa.Schema:
    """The output columns of a job; `parsed` only when the job has a JSON schema (it fixes the type)."""
    return OUTPUT_SCHEMA.append(pa.field("parsed", parsed_type)) if parsed_type is not None else OUTPUT_SCHEMA


def to_output_table(
    table: pa.Table,
    model_name: str,
    passthrough: dict[str, str] | list[str],
    run_id: str | None = None,
    parsed_type: pa.DataType | None = None,
    fingerprints: dict[str, str] | None = None,
) -> pa.Table:
    """Select and type the output columns (missing ones become nulls), then the pass-through columns: each
    manifest column (carried as `in.<name>`) under its output name (a list: its own name). Output names are
    checked against the output's own when the config is read (`passthrough.clash_problem`); one that clashes
    anyway is a bug and fails here rather than replacing a column. `fingerprints`: task -> the run's config
    fingerprint (`config_fingerprint`; null for a task without one)."""
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
        elif field.name == "config_fingerprint" and fingerprints and "task" in table.column_names:
            arrays.append(pa.array([fingerprints.get(t) for t in table.column("task").to_pylist()], pa.string()))
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
