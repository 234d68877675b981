"""Manifest files and read units: what the driver decides about manifests, without reading any rows.

The driver expands glob patterns into `ManifestFile`s (a listing: cheap) and cuts them into `ReadUnit`s that
workers read in parallel:

- JSONL: byte ranges of about `input.split_bytes`. A range owns the lines that *start* inside it (the reader
  skips the partial line at its start and finishes the line that crosses its end), which is safe because a
  JSON line cannot contain a raw newline. A range's first line number comes from counting the newlines
  before it (`count_newlines`, run on the workers by the layout step), so error ids name the true line.
- CSV: one unit per file (a quoted field may contain newlines, so byte offsets cannot be trusted).
- Parquet: runs of row groups of about `input.split_bytes` of column data (sizes from the footer).

A unit's `index` orders all units in manifest order (files in the sorted order of their patterns, then by
offset), which is the order "first occurrence" of a duplicate id refers to.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import OBJECT_STORE_SCHEMES, SUPPORTED_SCHEMES, fsspec_filesystem, scheme_of

FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".tar": "webdataset",
    # gzip-compressed shards are read only when their name says so (a `.tar` is never decompressed).
    ".tar.gz": "webdataset",
    ".tgz": "webdataset",
}
# The files a directory given as a manifest stands for (`.json` files there are a dataset's metadata).
DIRECTORY_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".csv", ".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class ManifestFile:
    uri: str
    format: str  # jsonl | csv | parquet | webdataset
    size: int  # bytes
    label: str  # how error ids name the file: `<label>:<line>` (the base name unless two files share it)
    renames: tuple[tuple[str, str], ...] = ()  # (column in the file, name it is read as): input.image_column...
    max_media_bytes: int | None = None  # fetch.max_bytes for media held in the file (WebDataset, Parquet cells)


@dataclass(frozen=True)
class ReadUnit:
    index: int  # position of the unit in manifest order
    file: ManifestFile
    start: int  # JSONL: first byte; Parquet: first row group; CSV: 0
    stop: int  # JSONL: end byte (exclusive); Parquet: end row group (exclusive); CSV: file size
    first_line: int = 1  # line (JSONL, CSV) or row (Parquet) number of the unit's first row, 1-based


def manifest_suffix(name: str) -> str:
    """The suffix that tells a manifest's format: `.jsonl`, `.tar`, and the two-part `.tar.gz`."""
    name = name.lower()
    return ".tar.gz" if name.endswith(".tar.gz") else PurePosixPath(name).suffix


def detect_format(uri: str, configured: str) -> str:
    if configured != "auto":
        return configured
    suffix = manifest_suffix(uri.split("?")[0])
    if suffix not in FORMATS:
        raise ConfigError(f"manifest {uri}: cannot tell the format from {suffix or 'no extension'!r}; set input.format")
    return FORMATS[suffix]


def expand_manifests(
    patterns: list[str],
    storage: StorageConfig,
    configured_format: str = "auto",
    renames: dict[str, str] | None = None,
    max_media_bytes: int | None = None,
) -> list[ManifestFile]:
    """Patterns -> manifest files (globs expanded and sorted, sizes from the listing; a directory stands for the
    manifest files directly in it, such as a Parquet dataset's shards). No match is fatal. `renames`: columns
    read under another name (`input.image_column` -> `image`); `max_media_bytes`: the most bytes of one image
    held in a manifest (`fetch.max_bytes`)."""
    found: list[tuple[str, int]] = []
    for pattern in patterns:
        scheme = scheme_of(pattern)
        if scheme and scheme not in SUPPORTED_SCHEMES:
            raise ConfigError(f"manifest {pattern}: unsupported URI scheme {scheme!r}")
        fs, path = fsspec_filesystem(pattern, storage)
        try:
            if any(c in path for c in "*?["):
                matches = sorted(
                    (p, info) for p, info in fs.glob(path, detail=True).items() if info.get("type") != "directory"
                )
            else:
                info = fs.info(path) if fs.exists(path) else None
                matches = [(path, info)] if info and info.get("type") != "directory" else []
                if info and info.get("type") == "directory":
                    matches = sorted(
                        (i["name"], i)
                        for i in fs.ls(path, detail=True)
                        if i.get("type") != "directory" and manifest_suffix(i["name"]) in DIRECTORY_SUFFIXES
                    )
        except Exception as exc:  # noqa: BLE001 - any listing failure is fatal here
            raise ConfigError(f"manifest {pattern}: cannot list: {type(exc).__name__}: {exc}") from None
        if not matches:
            globbed = any(c in path for c in "*?[")
            raise ConfigError(f"manifest {pattern}: " + ("no file matches the pattern" if globbed else "no such file"))
        found += [
            (f"{scheme}://{p}" if scheme in OBJECT_STORE_SCHEMES else p, int(info.get("size") or 0))
            for p, info in matches
        ]
    labels = file_labels([uri for uri, _ in found])
    pairs = tuple((old, new) for new, old in (renames or {}).items() if old != new)
    return [
        ManifestFile(uri, detect_format(uri, configured_format), size, label, pairs, max_media_bytes)
        for (uri, size), label in zip(found, labels)
    ]


def input_renames(input_config) -> dict[str, str]:
    """The manifest columns read under the reserved names: {"image": input.image_column, ...}."""
    return {"image": input_config.image_column, "images": input_config.images_column, "id": input_config.id_column}


def file_labels(uris: list[str]) -> list[str]:
    """Base names; when two files share one (nightly shards in dated folders), paths below their common folder."""
    names = [posixpath.basename(u) for u in uris]
    if len(set(names)) != len(names):
        common = posixpath.commonpath([u.split("://", 1)[-1] for u in uris])
        names = [posixpath.relpath(u.split("://", 1)[-1], common) for u in uris]
    # A local file name that is not UTF-8 arrives with surrogate escapes; labels name rows, so they must be text.
    return [n.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for n in names]


def plan_units(files: list[ManifestFile], split_bytes: int) -> list[ReadUnit]:
    """Units before layout: JSONL files cut into byte ranges (first lines still unknown), one unit per CSV
    file, one per Parquet file (cut into row groups by `parquet_units`)."""
    units: list[ReadUnit] = []
    for file in files:
        if file.format == "jsonl" and file.size > split_bytes:
            for start in range(0, file.size, split_bytes):
                units.append(ReadUnit(len(units), file, start, min(start + split_bytes, file.size)))
        else:
            units.append(ReadUnit(len(units), file, 0, file.size))
    return units


def needs_layout(unit: ReadUnit) -> bool:
    """Whether the unit's first line number or row groups must be read from the file first."""
    return unit.file.format == "parquet" or (unit.file.format == "jsonl" and unit.stop - unit.start < unit.file.size)


def number_units(units: list[ReadUnit], layouts: dict[int, object], split_bytes: int) -> list[ReadUnit]:
    """Final units in manifest order, from the layout of the units that needed one: for a JSONL range, the
    newlines before it in its own range (`count_newlines`); for a Parquet file, its row groups as
    (rows, bytes) (`parquet_row_groups`)."""
    out: list[ReadUnit] = []
    lines_before: dict[str, int] = {}
    for unit in units:
        if unit.file.format == "parquet":
            out += parquet_units(unit, layouts[unit.index], split_bytes, len(out))
            continue
        if needs_layout(unit):  # a JSONL file cut into byte ranges
            before = lines_before.get(unit.file.uri, 0)
            lines_before[unit.file.uri] = before + layouts[unit.index]
            first = 1 if unit.start == 0 else 2 + before
            out.append(replace(unit, index=len(out), first_line=first))
        else:
            out.append(replace(unit, index=len(out)))
    return out


def parquet_units(
    unit: ReadUnit, row_groups: list[tuple[int, int]], split_bytes: int, first_index: int
) -> list[ReadUnit]:
    """Runs of consecutive row groups of about `split_bytes` of column data, each numbered by its first row."""
    units, start, row, size, first_row = [], 0, 1, 0, 1
    for group, (rows, nbytes) in enumerate(row_groups):
        if group > start and size + nbytes > split_bytes:
            units.append(replace(unit, index=first_index + len(units), start=start, stop=group, first_line=first_row))
            start, size, first_row = group, 0, row
        size += nbytes
        row += rows
    units.append(replace(unit, index=first_index + len(units), start=start, stop=len(row_groups), first_line=first_row))
    return units


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


def parquet_row_groups(uri: str, storage: StorageConfig) -> list[tuple[int, int]]:
    """(rows, column data bytes) per row group, from the Parquet footer."""
    import pyarrow.parquet as pq

    fs, path = fsspec_filesystem(uri, storage)
    with open_manifest(fs, path, uri) as f:
        try:
            meta = pq.ParquetFile(f).metadata
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"manifest {uri}: not a readable Parquet file: {type(exc).__name__}: {exc}") from None
        if "id" not in meta.schema.names:
            raise ConfigError(f"manifest {uri}: no `id` column (columns: {meta.schema.names})")
        return [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]


def open_manifest(fs, path: str, uri: str):
    try:
        return fs.open(path, "rb")
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"manifest {uri}: cannot read: {type(exc).__name__}: {exc}") from None
