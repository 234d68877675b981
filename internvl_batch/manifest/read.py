"""Reading one `ReadUnit`: its raw rows as (line number, dict) or (line number, ManifestError).

The unit's format reads the rows (`manifest.formats`: `ManifestFormat.rows`); this module adds what is the same
for every format: columns read under another name (`input.image_column`, ...) and ids made from row numbers
(`input.id_column: null`).

Malformed lines are values, never exceptions: they become error rows named `<file label>:<line>`. Problems
with the file as a whole (unreadable, not UTF-8 CSV, no `id` column, not Parquet or Arrow) raise
`ConfigError`, which stops the job before any model work. `UnitRows` also counts what the report needs: blank
lines (skipped) and, for formats with `counts_id_field` (JSONL), rows that have an `id` field (a file where
none has one is fatal, checked per file by the caller).

Row numbers are 1-based: the line for JSONL and CSV (CSV: the line a record ends on, the header being line
1), the row for Parquet and Arrow (row n is `datasets`' index n - 1), the sample for WebDataset. With
`input.id_column: null` every row's id is `<file label>:<number>`, the name an error row without a readable
id gets in any case; it is stable while the files and their names are unchanged (`files.file_labels`).
"""

from __future__ import annotations

from collections.abc import Iterator

from internvl_batch.config import StorageConfig
from internvl_batch.manifest.formats import RowCounts, format_of
from internvl_batch.manifest.units import ReadUnit


class UnitRows:
    """Iterate a unit's rows once: `for number, raw in UnitRows(unit, storage)`; then read its counters
    (`blank_lines`, `rows_with_id_field`)."""

    def __init__(self, unit: ReadUnit, storage: StorageConfig) -> None:
        self.unit = unit
        self.storage = storage
        self.format = format_of(unit.file)
        self.counts = RowCounts()
        self.id_field = unit.file.id_field  # input.id_column; None: ids made from row numbers

    @property
    def blank_lines(self) -> int:
        return self.counts.blank_lines

    @property
    def rows_with_id_field(self) -> int:
        return self.counts.rows_with_id_field

    def __iter__(self) -> Iterator[tuple[int, dict | Exception]]:
        rows = self.format.rows(self.unit, self.storage, self.counts)
        rows = _renamed(rows, self.unit.file.renames) if self.unit.file.renames else rows
        return _numbered(rows, self.unit.file.label) if self.id_field is None else rows


def unit_layout(unit: ReadUnit, storage: StorageConfig):
    """What `files.number_units` needs of a unit with `files.needs_layout` (run on the workers before the scan;
    `ManifestFormat.layout`): JSONL: the newlines before its byte range; Parquet: its row groups; Arrow: its
    record batches. Also checks that the file has its id column."""
    return format_of(unit.file).layout(unit, storage)


def _renamed(rows: Iterator[tuple[int, dict | Exception]], renames) -> Iterator[tuple[int, dict | Exception]]:
    """Rows with columns read under another name (`input.image_column: picture` -> `image`)."""
    for number, row in rows:
        if isinstance(row, dict):
            for old, new in renames:
                if old in row:
                    row[new] = row.pop(old)
        yield number, row


def _numbered(rows: Iterator[tuple[int, dict | Exception]], label: str) -> Iterator[tuple[int, dict | Exception]]:
    """Rows with ids made from their numbers (`input.id_column: null`): `<label>:<number>`, also for error rows
    (whose reader may have named them by a key, as WebDataset does)."""
    for number, row in rows:
        if isinstance(row, dict):
            row["id"] = f"{label}:{number}"
        else:
            row.row_id = f"{label}:{number}"
        yield number, row
