"""Arrow helpers shared by the stages, and the stages' column contracts.

Each stage declares the columns it reads (`INPUT_COLUMNS`) and checks them on entry with `require_columns`:
a table without one is a wiring mistake (a bug in the pipeline builder or a caller), never bad input, and
fails at once naming the column, instead of reading as a column of nulls.
"""

from __future__ import annotations

import pyarrow as pa


class ColumnContractError(ValueError):
    """A stage was handed a table without a column it needs."""


def require_columns(table: pa.Table, stage: str, names) -> None:
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise ColumnContractError(
            f"{stage} needs the column(s) {', '.join(missing)}; the table has {', '.join(table.column_names)}"
        )


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
