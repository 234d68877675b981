"""Manifests (JSONL, CSV, Parquet; local or s3://) -> one request row per input row, read on the driver.

Reading up front is what lets the job fail fast (unreadable file, no `id` column), report duplicate ids
before any work, and resolve relative media paths against each manifest's own location.

Request row (columns out): `id`, `row_index`, `source` (manifest file and line), `media_kind` ("image",
"images", "video"), `media` (absolute URIs), `question`, `task`, `bound` ([start_s, end_s] of a video, or
null), `num_segments` (frames to sample from a video, or null), `error` (set for a malformed row), plus the
configured pass-through columns. A malformed row is never dropped: it becomes a row with `error` = "manifest: ...". A row
whose id is missing gets the id `<manifest file name>:<line>` so that it still has its one output row.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Iterator

from internvl_batch.config import InputConfig, StorageConfig
from internvl_batch.errors import ConfigError, RowError, format_row_error
from internvl_batch.storage import SUPPORTED_SCHEMES, fsspec_filesystem, resolve_relative, scheme_of

log = logging.getLogger(__name__)

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
RESERVED = ("id", "image", "images", "video", "bound", "num_segments", "question", "task", "expression")


class ManifestError(RowError):
    """One manifest row is malformed."""


@dataclass
class ManifestReport:
    files: list[str] = field(default_factory=list)
    rows: int = 0
    malformed_rows: int = 0
    blank_lines: int = 0
    duplicate_ids: dict[str, int] = field(default_factory=dict)  # id -> extra occurrences

    def summary(self) -> dict:
        dups = sorted(self.duplicate_ids)
        return {
            "files": self.files, "rows": self.rows, "malformed_rows": self.malformed_rows,
            "blank_lines": self.blank_lines, "duplicate_ids": len(dups), "duplicate_id_examples": dups[:10],
        }  # fmt: skip


def expand_manifests(patterns: list[str], storage: StorageConfig) -> list[str]:
    """Patterns -> manifest URIs (globs expanded, sorted). No match is a fatal error naming the pattern."""
    files: list[str] = []
    for pattern in patterns:
        scheme = scheme_of(pattern)
        if scheme and scheme not in SUPPORTED_SCHEMES:
            raise ConfigError(f"manifest {pattern}: unsupported URI scheme {scheme!r}")
        fs, path = fsspec_filesystem(pattern, storage)
        try:
            matches = sorted(fs.glob(path)) if any(c in path for c in "*?[") else ([path] if fs.isfile(path) else [])
        except Exception as exc:  # noqa: BLE001 - any listing failure is fatal here
            raise ConfigError(f"manifest {pattern}: cannot list: {type(exc).__name__}: {exc}") from None
        if not matches:
            raise ConfigError(f"manifest {pattern}: no such file")
        files += [f"{scheme}://{m}" if scheme == "s3" else m for m in matches]
    return files


def detect_format(uri: str, configured: str) -> str:
    if configured != "auto":
        return configured
    suffix = PurePosixPath(uri.split("?")[0]).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"manifest {uri}: cannot tell the format from {suffix or 'no extension'!r}; set input.format")
    return FORMATS[suffix]


def _read_bytes(uri: str, storage: StorageConfig) -> bytes:
    fs, path = fsspec_filesystem(uri, storage)
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"manifest {uri}: cannot read: {type(exc).__name__}: {exc}") from None


def raw_rows(uri: str, fmt: str, storage: StorageConfig, report: ManifestReport) -> Iterator[tuple[int, dict | Exception]]:
    """(line or row number, parsed row or the parse error) for every row of one manifest."""
    data = _read_bytes(uri, storage)
    if fmt == "jsonl":
        yield from _jsonl_rows(uri, data, report)
    elif fmt == "csv":
        yield from _csv_rows(uri, data)
    else:
        yield from _parquet_rows(uri, data)


def _jsonl_rows(uri: str, data: bytes, report: ManifestReport):
    lines = data.split(b"\n")
    parsed = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            if number < len(lines):  # the text after a final newline is not a line
                report.blank_lines += 1
            continue
        try:
            row = json.loads(line.decode("utf-8"))
            if not isinstance(row, dict):
                raise ManifestError(f"line {number} is JSON {type(row).__name__}, not an object")
            parsed.append((number, row))
        except UnicodeDecodeError as exc:
            parsed.append((number, ManifestError(f"line {number} is not valid UTF-8 ({exc.reason} at byte {exc.start})")))
        except json.JSONDecodeError as exc:
            parsed.append((number, ManifestError(f"line {number} is not valid JSON: {exc.msg}")))
        except ManifestError as exc:
            parsed.append((number, exc))
    if parsed and not any(isinstance(r, dict) and "id" in r for _, r in parsed):
        raise ConfigError(f"manifest {uri}: no row has an `id` field")
    yield from parsed


def _csv_rows(uri: str, data: bytes):
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"manifest {uri}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header or "id" not in header:
        raise ConfigError(f"manifest {uri}: no `id` column (header: {header})")
    for values in reader:
        number = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield number, ManifestError(f"line {number} has {len(values)} fields, the header has {len(header)}")
            continue
        row = {k: (v if v != "" else None) for k, v in zip(header, values)}
        for key in ("images", "bound"):
            if isinstance(row.get(key), str):
                row[key] = _csv_list(row[key], key)
        if isinstance(row.get("num_segments"), str):
            row["num_segments"] = int(row["num_segments"]) if row["num_segments"].strip().isdigit() else row["num_segments"]
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


def _parquet_rows(uri: str, data: bytes):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"manifest {uri}: not a readable Parquet file: {type(exc).__name__}: {exc}") from None
    if "id" not in table.column_names:
        raise ConfigError(f"manifest {uri}: no `id` column (columns: {table.column_names})")
    for number, row in enumerate(table.to_pylist(), start=1):
        yield number, row


def normalize_row(raw: dict | Exception, uri: str, number: int, passthrough: list[str]) -> dict:
    """A request row; malformed input becomes a row with `error` (never an exception)."""
    name = PurePosixPath(uri).name
    row: dict = {"id": f"{name}:{number}", "source": f"{uri}:{number}", "media_kind": "image", "media": [],
                 "question": None, "task": None, "expression": None, "bound": None, "num_segments": None,
                 "error": None}  # fmt: skip
    try:
        if isinstance(raw, Exception):
            raise raw
        for column in passthrough:
            row[column] = raw.get(column)
        row["id"] = _id_of(raw, row["id"])
        row["question"] = _text(raw, "question")
        row["task"] = _text(raw, "task")
        row["expression"] = _text(raw, "expression")
        row["media_kind"], media = _media_of(raw)
        row["media"] = [resolve_relative(m, uri) for m in media]
        row["bound"], row["num_segments"] = _video_options(raw, row["media_kind"])
        for m in row["media"]:
            if scheme_of(m) not in ("",) + SUPPORTED_SCHEMES:
                raise ManifestError(f"unsupported URI scheme {scheme_of(m)!r} in {m!r} (supported: s3://, local paths)")
    except RowError as exc:
        row["error"] = format_row_error("manifest", exc)
    return row


def _id_of(raw: dict, fallback: str) -> str:
    value = raw.get("id")
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise ManifestError("missing `id`")
    if not isinstance(value, (str, int)):
        raise ManifestError(f"`id` must be a string, got {type(value).__name__}")
    return str(value)


def _text(raw: dict, key: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ManifestError(f"`{key}` must be text, got {type(value).__name__}")


def _media_of(raw: dict) -> tuple[str, list[str]]:
    present = [k for k in ("image", "images", "video") if raw.get(k) is not None]
    if len(present) > 1:
        raise ManifestError(f"row has {' and '.join(f'`{k}`' for k in present)}; use one")
    if not present:
        raise ManifestError("row has none of `image`, `images`, `video`")
    kind, value = present[0], raw[present[0]]
    if isinstance(value, Exception):
        raise value
    if kind == "images":
        if not isinstance(value, list) or not value or not all(isinstance(u, str) and u.strip() for u in value):
            raise ManifestError("`images` must be a non-empty list of URIs")
        return "images", [u.strip() for u in value]
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"`{kind}` must be one non-empty URI")
    return kind, [value.strip()]


def _video_options(raw: dict, kind: str) -> tuple[list[float] | None, int | None]:
    bound, segments = raw.get("bound"), raw.get("num_segments")
    if kind != "video":
        if bound is not None or segments is not None:
            raise ManifestError("`bound` and `num_segments` apply to `video` rows only")
        return None, None
    if isinstance(bound, Exception):
        raise bound
    if bound is not None:
        ok = isinstance(bound, list) and len(bound) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bound)
        if not ok or not bound[0] < bound[1]:
            raise ManifestError(f"`bound` must be [start_s, end_s] with start < end, got {bound!r}")
        bound = [float(b) for b in bound]
    if segments is not None and (isinstance(segments, bool) or not isinstance(segments, int) or segments < 1):
        raise ManifestError(f"`num_segments` must be a positive integer, got {segments!r}")
    return bound, segments


def load_requests(config: InputConfig, storage: StorageConfig, extra_columns: list[str] | None = None) -> tuple[list[dict], ManifestReport]:
    """Every request row of every manifest, in order, duplicates handled per `config.duplicate_ids`.
    `extra_columns` (e.g. a task template's fields) are carried like pass-through columns."""
    carried = list(dict.fromkeys([*config.passthrough_columns, *(extra_columns or [])]))
    report = ManifestReport(files=expand_manifests(config.manifests, storage))
    rows: list[dict] = []
    for uri in report.files:
        fmt = detect_format(uri, config.format)
        for number, raw in raw_rows(uri, fmt, storage, report):
            rows.append(normalize_row(raw, uri, number, carried))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["id"]] = counts.get(row["id"], 0) + 1
    report.duplicate_ids = {k: v - 1 for k, v in counts.items() if v > 1}
    if report.duplicate_ids:
        examples = ", ".join(sorted(report.duplicate_ids)[:5])
        message = f"{len(report.duplicate_ids)} ids appear more than once (e.g. {examples})"
        if config.duplicate_ids == "error":
            raise ConfigError(f"{message}; set input.duplicate_ids=keep_first to process the first of each")
        log.warning("%s; keeping the first of each", message)
        seen: set[str] = set()
        rows = [r for r in rows if not (r["id"] in seen or seen.add(r["id"]))]
    for index, row in enumerate(rows):
        row["row_index"] = index
    report.rows = len(rows)
    report.malformed_rows = sum(1 for r in rows if r["error"])
    return rows, report
