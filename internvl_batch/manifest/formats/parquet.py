"""Parquet manifests (`.parquet`): a read unit's row groups as raw rows, with the media held in cells bounded.

A file is cut into runs of row groups of about `input.split_bytes` of column data: the layout is the row groups'
(rows, bytes) from the footer, read on the workers (`parquet_row_groups`, which also checks the id column). Rows
are numbered from 1 in the file. (`formats.arrow` reads Arrow IPC files with the same per-row checks,
`bounded_rows`.)

Parquet datasets (Hugging Face `datasets` writes them so) hold images in their cells: encoded bytes, or an
`Image` struct {bytes, path}. A cell larger than `fetch.max_bytes` (the file's `max_media_bytes`) is never
passed on: its row becomes an error row saying so. Arrow cannot read part of a column chunk, so the bound
before reading is per row group: when a media column's uncompressed size in a row group exceeds its rows
times the limit, some cell must exceed the limit, and that column is not read at all (the rows of that row
group become error rows naming the limit; a few KB of compressed zeros cannot expand to gigabytes here).
Memory per row group is thus at most rows x the limit, as for a file of legitimate images.

String cells that are not UTF-8 (Arrow does not check what other writers stored) make their row an error
row naming the column, instead of failing the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError, ManifestError
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.manifest.formats.base import ManifestFormat, RowCounts, runs
from internvl_batch.manifest.row_errors import row_error
from internvl_batch.manifest.units import ReadUnit, check_id_column, open_manifest

MEDIA_COLUMNS = ("image", "images", "document")  # the reserved names whose cells may hold media bytes


class ParquetFormat(ManifestFormat):
    name = "parquet"
    title = "Parquet"
    suffixes = (".parquet",)

    def needs_layout(self, unit: ReadUnit) -> bool:
        return True

    def layout(self, unit: ReadUnit, storage: StorageConfig) -> list[tuple[int, int]]:
        return parquet_row_groups(unit.file.uri, storage, unit.file.id_field)

    def units(
        self, planned: list[ReadUnit], layouts: list[object], split_bytes: int, first_index: int
    ) -> list[ReadUnit]:
        """Runs of consecutive row groups of about `split_bytes` of column data, each numbered by its first row."""
        out: list[ReadUnit] = []
        for unit, row_groups in zip(planned, layouts):
            for start, stop, first in runs(row_groups, split_bytes):
                out.append(replace(unit, index=first_index + len(out), start=start, stop=stop, first_line=first))
        return out

    def rows(self, unit: ReadUnit, storage: StorageConfig, counts: RowCounts) -> Iterator[tuple[int, object]]:
        return parquet_rows(unit, storage, unit.file.id_field)


def parquet_row_groups(uri: str, storage: StorageConfig, id_field: str | None = "id") -> list[tuple[int, int]]:
    """(rows, column data bytes) per row group, from the Parquet footer; the file must have the `id_field`
    column (input.id_column) unless it is None."""
    import pyarrow.parquet as pq

    fs, path = fsspec_filesystem(uri, storage)
    with open_manifest(fs, path, uri) as f:
        try:
            meta = pq.ParquetFile(f).metadata
            columns = meta.schema.to_arrow_schema().names  # top-level columns, not the leaves of structs
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"manifest {uri}: not a readable Parquet file: {type(exc).__name__}: {exc}") from None
        check_id_column(uri, columns, id_field)
        return [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]


def parquet_rows(
    unit: ReadUnit, storage: StorageConfig, id_field: str | None = "id"
) -> Iterator[tuple[int, dict | Exception]]:
    """The unit's row groups as (row number, raw row or ManifestError), in file order. `id_field`: the column
    read as `id` (input.id_column), which the file must have; None when ids are made from row numbers."""
    import pyarrow.parquet as pq

    uri = unit.file.uri
    fs, path = fsspec_filesystem(uri, storage)
    number = unit.first_line
    media = media_columns(unit)
    limit = unit.file.max_media_bytes
    with open_manifest(fs, path, uri) as f:
        try:
            reader = pq.ParquetFile(f)
            names = reader.schema_arrow.names
            check_id_column(uri, names, id_field)
            for group in range(unit.start, unit.stop):
                unread = _columns_over_limit(reader.metadata.row_group(group), media, limit)
                table = reader.read_row_group(group, columns=[n for n in names if n not in unread])
                for row in bounded_rows(table, id_field, media, limit, unread):
                    yield number, row
                    number += 1
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"manifest {uri}: not a readable Parquet file: {type(exc).__name__}: {exc}") from None


def media_columns(unit: ReadUnit) -> list[str]:
    """The columns that may hold media bytes, as the file names them (input.image_column, ...)."""
    renamed = {new: old for old, new in unit.file.renames}
    return [renamed.get(name, name) for name in MEDIA_COLUMNS]


def _columns_over_limit(group, media: list[str], limit: int | None) -> dict[str, int]:
    """{media column: its uncompressed bytes} for the columns whose cells cannot all be within `limit`."""
    if limit is None or not group.num_rows:
        return {}
    sizes: dict[str, int] = {}
    for i in range(group.num_columns):
        chunk = group.column(i)
        top = chunk.path_in_schema.split(".", 1)[0]
        if top in media:
            sizes[top] = sizes.get(top, 0) + chunk.total_uncompressed_size
    return {name: size for name, size in sizes.items() if size > group.num_rows * limit}


def bounded_rows(table, id_field: str | None, media: list[str], limit: int | None, unread: dict[str, int]) -> list:
    """A table's rows as dicts, or ManifestErrors for the rows that hold an image over `limit` (whose bytes are
    dropped before they become Python objects) and, when `unread` names a media column left unread, for all."""
    over = _oversized_cells(table, media, limit) if limit is not None else {}
    if over:  # drop the big cells before they are copied into Python objects
        import pyarrow as pa
        import pyarrow.compute as pc

        mask = np.zeros(table.num_rows, bool)
        mask[list(over)] = True
        for name in {name for name, _ in over.values()}:
            column = table.column(name)
            position = table.column_names.index(name)
            table = table.set_column(position, name, pc.if_else(pa.array(mask), pa.nulls(1, column.type)[0], column))
    rows = _table_rows(table, id_field)
    for i, row in enumerate(rows):
        if isinstance(row, ManifestError):
            continue
        if unread:
            name, size = next(iter(unread.items()))
            rows[i] = row_error(
                f"`{name}` was not read: its row group holds {size} bytes of it for {table.num_rows} rows, so some "
                f"image is over fetch.max_bytes={limit}",
                row.get(id_field),
            )
        elif i in over:
            name, size = over[i]
            rows[i] = row_error(
                f"`{name}` holds an image of {size} bytes, over fetch.max_bytes={limit}", row.get(id_field)
            )
    return rows


def _oversized_cells(table, media: list[str], limit: int) -> dict[int, tuple[str, int]]:
    """{row: (column, bytes of its largest image)} for the rows holding an image over `limit`."""
    found: dict[int, tuple[str, int]] = {}
    for name in media:
        if name in table.column_names:
            sizes = _cell_sizes(table.column(name).combine_chunks())
            for row in np.flatnonzero(sizes > limit):
                found.setdefault(int(row), (name, int(sizes[row])))
    return found


def _cell_sizes(array) -> np.ndarray:
    """Per cell, the bytes of its largest image: binary cells, {bytes, path} structs, or lists of either."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return pc.binary_length(array).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        return _cell_sizes(pc.struct_field(array, "bytes"))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        out = np.zeros(len(array), np.int64)
        values = _cell_sizes(pc.list_flatten(array))
        if len(values):
            np.maximum.at(out, pc.list_parent_indices(array).to_numpy(zero_copy_only=False), values)
        return out
    return np.zeros(len(array), np.int64)


def _table_rows(table, id_field: str | None) -> list[dict | ManifestError]:
    """A row group's rows as dicts. Arrow does not check that a Parquet string column holds UTF-8 (files
    written by other tools may not): a row with such a cell becomes an error row naming the column."""
    try:
        return table.to_pylist()
    except UnicodeDecodeError:
        pass
    rows: list[dict | ManifestError] = []
    for i in range(table.num_rows):
        row, bad = {}, None
        for name in table.column_names:
            try:
                row[name] = table.column(name)[i].as_py()
            except UnicodeDecodeError:
                bad = bad or name
                row[name] = None
        rows.append(
            row if bad is None else row_error(f"`{bad}` holds bytes that are not valid UTF-8 text", row.get(id_field))
        )
    return rows
