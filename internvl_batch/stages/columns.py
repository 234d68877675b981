"""Arrow helpers shared by the stages: set or add typed columns without disturbing the others."""

from __future__ import annotations

import pyarrow as pa


def set_column(table: pa.Table, name: str, values, type_: pa.DataType) -> pa.Table:
    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=type_)
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), pa.field(name, type_), array)
    return table.append_column(pa.field(name, type_), array)


def drop_columns(table: pa.Table, names) -> pa.Table:
    present = [n for n in names if n in table.column_names]
    return table.drop_columns(present) if present else table


def column(table: pa.Table, name: str, default=None) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [default] * table.num_rows
