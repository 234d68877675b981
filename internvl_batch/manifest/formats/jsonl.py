"""JSONL manifests (`.jsonl`, `.ndjson`, `.json`): one JSON object per line.

A file larger than `input.split_bytes` is cut into byte ranges of that size. A range owns the lines that
*start* inside it (the reader skips the partial line at its start and finishes the line that crosses its end),
which is safe because a JSON line cannot contain a raw newline. A range's first line number comes from
counting the newlines before it (`count_newlines`: the layout, run on the workers), so error ids name the true
line. Blank lines are skipped and counted; a line that is not a JSON object is an error row named by its line.

Rows are free-form objects, with no header to check the id column on: `rows` counts the rows holding the id
field, and a file where none does is refused after the scan (`counts_id_field`). `.json` files are read only
when named (a folder's `.json` files are a dataset's metadata).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ManifestError
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.manifest.formats.base import ManifestFormat, RowCounts
from internvl_batch.manifest.row_errors import row_error, text_problem
from internvl_batch.manifest.units import ManifestFile, ReadUnit, open_manifest

READ_CHUNK = 8 * 2**20
_LONG_DIGITS = re.compile(rb"\d{19}")

try:
    import orjson as _orjson
except ImportError:  # optional speed-up; the json module gives the same rows
    _orjson = None


class JsonlFormat(ManifestFormat):
    name = "jsonl"
    title = "JSONL"
    suffixes = (".jsonl", ".json", ".ndjson")
    directory_suffixes = (".jsonl", ".ndjson")  # a folder's `.json` files are metadata
    counts_id_field = True

    def plan(self, file: ManifestFile, split_bytes: int) -> list[ReadUnit]:
        """Byte ranges of `split_bytes` when the file is larger (first lines still unknown), else the file."""
        if file.size <= split_bytes:
            return [ReadUnit(0, file, 0, file.size)]
        return [
            ReadUnit(0, file, start, min(start + split_bytes, file.size)) for start in range(0, file.size, split_bytes)
        ]

    def needs_layout(self, unit: ReadUnit) -> bool:
        return unit.stop - unit.start < unit.file.size  # a range of a file cut in several

    def layout(self, unit: ReadUnit, storage: StorageConfig) -> int:
        """The newlines in bytes [start - 1, stop - 1) of the range (see `count_newlines`)."""
        return count_newlines(unit.file.uri, unit.start, unit.stop, storage)

    def units(
        self, planned: list[ReadUnit], layouts: list[object], split_bytes: int, first_index: int
    ) -> list[ReadUnit]:
        """Each range numbered by its first line: 2 + the newlines counted in the ranges before it."""
        out: list[ReadUnit] = []
        before = 0
        for unit, newlines in zip(planned, layouts):
            if not self.needs_layout(unit):  # the whole file
                out.append(replace(unit, index=first_index + len(out)))
                continue
            first = 1 if unit.start == 0 else 2 + before
            before += newlines
            out.append(replace(unit, index=first_index + len(out), first_line=first))
        return out

    def rows(self, unit: ReadUnit, storage: StorageConfig, counts: RowCounts) -> Iterator[tuple[int, object]]:
        id_field = unit.file.id_field
        number = unit.first_line
        for line, last in owned_lines(unit, storage):
            if not line.strip():
                if not last:  # blank text after a file's final newline is not a line
                    counts.blank_lines += 1
                number += 1
                continue
            row = json_row(line, number, id_field)
            if isinstance(row, dict) and id_field in row:
                counts.rows_with_id_field += 1
            yield number, row
            number += 1


def count_newlines(uri: str, start: int, stop: int, storage: StorageConfig) -> int:
    """Newlines in bytes [start - 1, stop - 1) of a file: summed over the ranges before a range, plus 2, they
    give the number of the first line that range owns (see the module docstring)."""
    fs, path = fsspec_filesystem(uri, storage)
    begin = max(start - 1, 0)
    count = 0
    with open_manifest(fs, path, uri) as f:
        f.seek(begin)
        left = stop - 1 - begin
        while left > 0:
            chunk = f.read(min(left, 8 * 2**20))
            if not chunk:
                break
            count += chunk.count(b"\n")
            left -= len(chunk)
    return count


def owned_lines(unit: ReadUnit, storage: StorageConfig) -> Iterator[tuple[bytes, bool]]:
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


def json_row(line: bytes, number: int, id_field: str | None = "id") -> dict | ManifestError:
    """One line as a row, or the `ManifestError` that says why it is not a JSON object of Unicode text."""
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
