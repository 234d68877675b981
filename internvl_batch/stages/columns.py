"""Arrow helpers shared by the stages, and the stages' column contracts.

Each stage class declares the columns it reads (`INPUT_COLUMNS`), the columns it writes (`OUTPUT_COLUMNS`) and
which input columns it does not carry on (`DROPPED_COLUMNS`; None: it carries none). The pipeline builder
checks a chain of stages with `check_wiring` before anything runs, and each stage checks its table on entry
with `require_columns`: a missing column is a wiring mistake (a bug in the builder or a caller), never bad
input, and fails at once naming the column, instead of reading as a column of nulls.
"""

from __future__ import annotations

import pyarrow as pa

from internvl_batch.errors import ColumnContractError


def require_columns(table: pa.Table, stage: str, names) -> None:
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise ColumnContractError(
            f"{stage} needs the column(s) {', '.join(missing)}; the table has {', '.join(table.column_names)}"
        )


def check_wiring(columns, stages) -> None:
    """Raise `ColumnContractError` unless each stage of the chain gets the columns it reads from a table of
    `columns` passed through the stages before it."""
    available = set(columns)
    for stage in stages:
        missing = [name for name in stage.INPUT_COLUMNS if name not in available]
        if missing:
            raise ColumnContractError(
                f"{stage.__name__} needs the column(s) {', '.join(missing)}, which no stage before it gives"
            )
        kept = set() if stage.DROPPED_COLUMNS is None else available - set(stage.DROPPED_COLUMNS)
        available = kept | set(stage.OUTPUT_COLUMNS)


def set_column(table: pa.Table, name: str, values, type_: pa.DataType) -> pa.Table:
    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=type_)
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), pa.field(name, type_), array)
    return table.append_column(pa.field(name, type_), array)


def drop_columns(table: pa.Table, names) -> pa.Table:
    present = [n for n in names if n in table.column_names]
    return table.drop_columns(present) if present else table


def column(table: pa.Table, name: str) -> list:
    """A column's values; the column must be there (checked on entry with `require_columns`)."""
    return table.column(name).to_pylist()
