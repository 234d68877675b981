"""CSV manifests (`.csv`): a header line naming the columns, then one row per record.

A file is one unit, read whole (a quoted field may contain newlines, so byte offsets cannot be trusted). Text
must be UTF-8 (a BOM is allowed); the header must name the id column. A row is numbered by the line its record
ends on (the header is line 1); blank records are skipped. Empty cells are None; `images` and `bound` cells hold
a JSON array or values separated by `|`; a `num_segments` of digits is an int.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError, ManifestError
from internvl_batch.manifest.formats.base import ManifestFormat, RowCounts, read_whole
from internvl_batch.manifest.units import ReadUnit, check_id_column


class CsvFormat(ManifestFormat):
    name = "csv"
    title = "CSV"
    suffixes = (".csv",)

    def rows(self, unit: ReadUnit, storage: StorageConfig, counts: RowCounts) -> Iterator[tuple[int, object]]:
        return csv_rows(unit.file.uri, read_whole(unit, storage), unit.file.id_field)


def csv_rows(uri: str, data: bytes, id_field: str | None = "id") -> Iterator[tuple[int, dict | Exception]]:
    """The rows of a CSV file's bytes as (line number, row or ManifestError)."""
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
