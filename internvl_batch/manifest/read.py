"""Reading one `ReadUnit`: its raw rows as (line number, dict) or (line number, ManifestError).

Malformed lines are values, never exceptions: they become error rows named `<file label>:<line>`. Problems
with the file as a whole (unreadable, not UTF-8 CSV, no `id` column, not Parquet or Arrow) raise
`ConfigError`, which stops the job before any model work. `UnitRows` also counts what the report needs: blank
lines (skipped) and, for JSONL, rows that have an `id` field (a file where none has one is fatal, checked per
file by the caller).

Row numbers are 1-based: the line for JSONL and CSV (CSV: the line a record ends on, the header being line
1), the row for Parquet and Arrow (row n is `datasets`' index n - 1), the sample for WebDataset. With
`input.id_column: null` every row's id is `<file label>:<number>`, the name an error row without a readable
id gets in any case; it is stable while the files and their names are unchanged (`files.file_labels`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError, ManifestError, RowError  # noqa: F401 - ManifestError: re-exported
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.manifest.files import (
    ReadUnit,
    check_id_column,
    count_newlines,
    open_manifest,
    parquet_row_groups,
)
from internvl_batch.manifest.row_errors import row_error, text_problem

READ_CHUNK = 8 * 2**20
_LONG_DIGITS = re.compile(rb"\d{19}")

try:
    import orjson as _orjson
except ImportError:  # optional speed-up; the json module gives the same rows
    _orjson = None


class UnitRows:
    """Iterate a unit's rows once: `for number, raw in UnitRows(unit, storage)`."""

    def __init__(self, unit: ReadUnit, storage: StorageConfig) -> None:
        self.unit = unit
        self.storage = storage
        self.blank_lines = 0
        self.rows_with_id_field = 0
        self.id_field = unit.file.id_field  # input.id_column; None: ids made from row numbers

    def __iter__(self) -> Iterator[tuple[int, dict | Exception]]:
        fmt = self.unit.file.format
        if fmt == "jsonl":
            rows = self._jsonl()
        elif fmt == "csv":
            rows = _csv_rows(self.unit.file.uri, self._read_all(), self.id_field)
        elif fmt == "webdataset":
            from internvl_batch.manifest.webdataset import webdataset_rows

            rows = webdataset_rows(self.unit, self.storage)
        elif fmt == "arrow":
            from internvl_batch.manifest.arrow import arrow_rows

            rows = arrow_rows(self.unit, self.storage, self.id_field)
        else:
            from internvl_batch.manifest.parquet import parquet_rows

            rows = parquet_rows(self.unit, self.storage, self.id_field)
        rows = _renamed(rows, self.unit.file.renames) if self.unit.file.renames else rows
        return _numbered(rows, self.unit.file.label) if self.id_field is None else rows

    def _read_all(self) -> bytes:
        fs, path = fsspec_filesystem(self.unit.file.uri, self.storage)
        with open_manifest(fs, path, self.unit.file.uri) as f:
            try:
                return f.read()
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"manifest {self.unit.file.uri}: cannot read: {type(exc).__name__}: {exc}") from None

    def _jsonl(self) -> Iterator[tuple[int, dict | Exception]]:
        number = self.unit.first_line
        for line, last in _owned_lines(self.unit, self.storage):
            if not line.strip():
                if not last:  # blank text after a file's final newline is not a line
                    self.blank_lines += 1
                number += 1
                continue
            row = _json_row(line, number, self.id_field)
            if isinstance(row, dict) and self.id_field in row:
                self.rows_with_id_field += 1
            yield number, row
            number += 1


def unit_layout(unit: ReadUnit, storage: StorageConfig):
    """What `files.number_units` needs of a unit with `files.needs_layout` (run on the workers before the scan):
    JSONL: the newlines before its byte range; Parquet: its row groups; Arrow: its record batches. Also checks
    that the file has its id column."""
    if unit.file.format == "parquet":
        return parquet_row_groups(unit.file.uri, storage, unit.file.id_field)
    if unit.file.format == "arrow":
        from internvl_batch.manifest.arrow import arrow_batches

        return arrow_batches(unit.file.uri, storage, unit.file.id_field)
    return count_newlines(unit.file.uri, unit.start, unit.stop, storage)


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


def _owned_lines(unit: ReadUnit, storage: StorageConfig) -> Iterator[tuple[bytes, bool]]:
    """(line without its newline, whether it is the text after the file's last newline) for every line that
    starts in [unit.start, unit.stop). Reads in chunks, so memory stays near READ_CHUNK whatever the unit."""
    fs, path = fsspec_filesystem(unit.file.uri, storage)
    with open_manifest(fs, path, unit.file.uri) as f:
        position = max(unit.start - 1, 0)  # where `carry` starts in the file
        f.seek(position)
        carry = b""
        skip_first = unit.start > 0  # the line cut by the range's start belongs to the range before
        while True:
            chunk = f.read(READ_CHUNK)
            if not chunk:
                break
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()  # the unfinished last piece
            for line in lines:
                if skip_first:
                    skip_first = False
                elif position >= unit.stop:
                    return
                else:
                    yield line, False
                position += len(line) + 1
        if not skip_first and position < unit.stop:
            yield carry, True


def _json_row(line: bytes, number: int, id_field: str | None = "id") -> dict | ManifestError:
    # orjson parses a line ~3x faster; where it would differ from the json module (its errors, NaN and
    # Infinity, integers of 19 digits or more, lone surrogate escapes) the json module decides, so rows read
    # exactly as they did.
    if _orjson is not None and not _LONG_DIGITS.search(line):
        try:
            row = _orjson.loads(line)
        except _orjson.JSONDecodeError:
            pass
        else:
            return (
                row
                if isinstance(row, dict)
                else ManifestError(f"line {number} is JSON {_json_type(row)}, not an object")
            )
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return ManifestError(f"line {number} is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    except json.JSONDecodeError as exc:
        return ManifestError(f"line {number} is not valid JSON: {exc.msg}")
    if not isinstance(row, dict):
        return ManifestError(f"line {number} is JSON {_json_type(row)}, not an object")
    if b"\\u" in line:  # JSON may escape a lone surrogate (`\udfff`), which is not Unicode text
        problem = text_problem(row)
        if problem:
            return row_error(problem, row.get(id_field))
    return row


def _json_type(value) -> str:
    return type(value).__name__


def _csv_rows(uri: str, data: bytes, id_field: str | None = "id") -> Iterator[tuple[int, dict | Exception]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"manifest {uri}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise ConfigError(f"manifest {uri}: no header line (the first line names the columns)")
    check_id_column(uri, header, id_field, "header")
    for values in reader:
        number = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield number, ManifestError(f"line {number} has {len(values)} fields, the header has {len(header)}")
            continue
        row: dict[str, Any] = {k: (v if v != "" else None) for k, v in zip(header, values)}
        for key in ("images", "bound"):
            if isinstance(row.get(key), str):
                row[key] = _csv_list(row[key], key)
        segments = row.get("num_segments")
        if isinstance(segments, str) and segments.strip().isdigit():
            row["num_segments"] = int(segments)
        yield number, row


def _csv_list(text: str, key: str) -> Any:
    # CSV cells hold either a JSON array or values separated by "|".
    text = text.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return ManifestError(f"`{key}` is not a valid JSON array")
    parts = [part.strip() for part in text.split("|") if part.strip()]
    if key == "bound":
        try:
            return [float(p) for p in parts]
        except ValueError:
            return ManifestError(f"`bound` must be two numbers, got {text!r}")
    return parts
