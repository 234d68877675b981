"""Manifest files and read units: what the driver decides about manifests, without reading any rows.

The driver expands glob patterns into `ManifestFile`s (a listing: cheap) and cuts them into `ReadUnit`s that
workers read in parallel:

- JSONL: byte ranges of about `input.split_bytes`. A range owns the lines that *start* inside it (the reader
  skips the partial line at its start and finishes the line that crosses its end), which is safe because a
  JSON line cannot contain a raw newline. A range's first line number comes from counting the newlines
  before it (`count_newlines`, run on the workers by the layout step), so error ids name the true line.
- CSV: one unit per file (a quoted field may contain newlines, so byte offsets cannot be trusted).
- Parquet: runs of row groups of about `input.split_bytes` of column data (sizes from the footer).
- Arrow IPC (Hugging Face `save_to_disk`, `.arrow`): runs of record batches of about `input.split_bytes`,
  cut at message boundaries (byte offsets from the message headers, `manifest.arrow`).
- WebDataset: one unit per shard (a tar is read in order).

Which files a pattern stands for (globs, brace ranges, folders) is `manifest.discover`'s business.

A unit's `index` orders all units in manifest order (files in the sorted order of their patterns, then by
offset), which is the order "first occurrence" of a duplicate id refers to.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import OBJECT_STORE_SCHEMES, fsspec_filesystem, scheme_of
from internvl_batch.manifest.discover import find_manifests, manifest_suffix

FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    # Arrow IPC: `datasets` save_to_disk shards (stream format), `.arrows` streams, Feather v2 files.
    ".arrow": "arrow",
    ".arrows": "arrow",
    ".feather": "arrow",
    ".tar": "webdataset",
    # gzip-compressed shards are read only when their name says so (a `.tar` is never decompressed).
    ".tar.gz": "webdataset",
    ".tgz": "webdataset",
}


@dataclass(frozen=True)
class ManifestFile:
    uri: str
    format: str  # jsonl | csv | parquet | arrow | webdataset
    size: int  # bytes
    label: str  # how error ids name the file: `<label>:<line>` (the base name unless two files share it)
    renames: tuple[tuple[str, str], ...] = ()  # (column in the file, name it is read as): input.image_column...
    max_media_bytes: int | None = None  # fetch.max_bytes for media held in the file (WebDataset, Parquet cells)
    row_ids: bool = False  # input.id_column: null: every row's id is `<label>:<line or row>`, none is read

    @property
    def id_field(self) -> str | None:
        """The column read as `id` (input.id_column), or None when ids are made from the row's position."""
        if self.row_ids:
            return None
        return next((old for old, new in self.renames if new == "id"), "id")


@dataclass(frozen=True)
class ReadUnit:
    index: int  # position of the unit in manifest order
    file: ManifestFile
    start: int  # JSONL: first byte; Parquet: first row group; Arrow: first batch's offset (0: whole file); CSV: 0
    stop: int  # JSONL, Arrow: end byte (exclusive); Parquet: end row group (exclusive); CSV: file size
    first_line: int = 1  # line (JSONL, CSV) or row (Parquet, Arrow) number of the unit's first row, 1-based


def detect_format(uri: str, configured: str) -> str:
    if configured != "auto":
        return configured
    suffix = manifest_suffix(uri.split("?")[0])
    if suffix not in FORMATS:
        raise ConfigError(
            f"manifest {uri}: cannot tell the format from {suffix or 'no extension'!r} (known: {', '.join(FORMATS)}); "
            "set input.format"
        )
    return FORMATS[suffix]


def expand_manifests(
    patterns: list[str],
    storage: StorageConfig,
    configured_format: str = "auto",
    renames: dict[str, str | None] | None = None,
    max_media_bytes: int | None = None,
) -> list[ManifestFile]:
    """Patterns -> manifest files, in the order of the patterns (what each stands for: `discover`; sizes from
    the listing). No match is fatal. `renames`: columns read under another name (`input.image_column` ->
    `image`); {"id": None} means ids are made from each row's position (`input.id_column: null`);
    `max_media_bytes`: the most bytes of one image held in a manifest (`fetch.max_bytes`)."""
    found: list[tuple[str, int]] = []
    for pattern in patterns:
        scheme = scheme_of(pattern)
        found += [
            (f"{scheme}://{p}" if scheme in OBJECT_STORE_SCHEMES else p, size)
            for p, size in find_manifests(pattern, storage)
        ]
    labels = file_labels([uri for uri, _ in found])
    renames = dict(renames or {})
    row_ids = "id" in renames and renames["id"] is None
    pairs = tuple((old, new) for new, old in renames.items() if old is not None and old != new)
    return [
        ManifestFile(uri, detect_format(uri, configured_format), size, label, pairs, max_media_bytes, row_ids)
        for (uri, size), label in zip(found, labels)
    ]


def input_renames(input_config) -> dict[str, str | None]:
    """The manifest columns read under the reserved names: {"image": input.image_column, ...}; "id" maps to None
    when ids are made from the rows' positions (`input.id_column: null`)."""
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
    """Units before layout: JSONL files cut into byte ranges (first lines still unknown), one unit per other
    file (Parquet and Arrow files are cut into runs by `number_units` once their layout is known)."""
    units: list[ReadUnit] = []
    for file in files:
        if file.format == "jsonl" and file.size > split_bytes:
            for start in range(0, file.size, split_bytes):
                units.append(ReadUnit(len(units), file, start, min(start + split_bytes, file.size)))
        else:
            units.append(ReadUnit(len(units), file, 0, file.size))
    return units


def needs_layout(unit: ReadUnit) -> bool:
    """Whether the unit's first line number, row groups or record batches must be read from the file first."""
    fmt = unit.file.format
    return fmt in ("parquet", "arrow") or (fmt == "jsonl" and unit.stop - unit.start < unit.file.size)


def number_units(units: list[ReadUnit], layouts: dict[int, object], split_bytes: int) -> list[ReadUnit]:
    """Final units in manifest order, from the layout of the units that needed one (`read.unit_layout`): for a JSONL
    range, the newlines before it in its own range; for a Parquet file, its row groups as (rows, bytes); for
    an Arrow file, its record batches as (rows, bytes, start offset, end offset)."""
    out: list[ReadUnit] = []
    lines_before: dict[str, int] = {}
    for unit in units:
        if unit.file.format == "parquet":
            out += parquet_units(unit, layouts[unit.index], split_bytes, len(out))
            continue
        if unit.file.format == "arrow":
            batches = layouts[unit.index]
            for start, stop, first in runs([(rows, size) for rows, size, *_ in batches], split_bytes):
                # (A file whose batches cannot be read apart is laid out as one batch at offset 0: read whole.)
                begin, end = (batches[start][2], batches[stop - 1][3]) if stop > start else (unit.file.size,) * 2
                out.append(replace(unit, index=len(out), start=begin, stop=end, first_line=first))
            continue
        if needs_layout(unit):  # a JSONL file cut into byte ranges
            before = lines_before.get(unit.file.uri, 0)
            lines_before[unit.file.uri] = before + layouts[unit.index]
            first = 1 if unit.start == 0 else 2 + before
            out.append(replace(unit, index=len(out), first_line=first))
        else:
            out.append(replace(unit, index=len(out)))
    return out


def runs(parts: list[tuple[int, int]], split_bytes: int) -> list[tuple[int, int, int]]:
    """Consecutive parts (row groups, record batches: (rows, bytes) each) in runs of about `split_bytes`, as
    (first part, end part (exclusive), number of the run's first row, 1-based). A file without parts is one
    empty run."""
    out, start, row, size, first_row = [], 0, 1, 0, 1
    for part, (rows, nbytes) in enumerate(parts):
        if part > start and size + nbytes > split_bytes:
            out.append((start, part, first_row))
            start, size, first_row = part, 0, row
        size += nbytes
        row += rows
    out.append((start, len(parts), first_row))
    return out


def parquet_units(
    unit: ReadUnit, row_groups: list[tuple[int, int]], split_bytes: int, first_index: int
) -> list[ReadUnit]:
    """Runs of consecutive row groups of about `split_bytes` of column data, each numbered by its first row."""
    return [
        replace(unit, index=first_index + i, start=start, stop=stop, first_line=first)
        for i, (start, stop, first) in enumerate(runs(row_groups, split_bytes))
    ]


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


def check_id_column(uri: str, columns: list[str], id_field: str | None, what: str = "columns") -> None:
    """Raise the `ConfigError` of a tabular manifest without its id column, naming the columns it has and the
    two fixes: another column as the id, or ids made from the rows' positions."""
    if id_field is None or id_field in columns:
        return
    shown = ", ".join(columns[:20]) + (f", ... ({len(columns)} in all)" if len(columns) > 20 else "")
    setting = "input.id_column" if id_field == "id" else f"input.id_column ({id_field!r})"
    raise ConfigError(
        f"manifest {uri}: no `{id_field}` column ({what}: {shown or 'none'}); set {setting} to the column that "
        "holds each row's id, or input.id_column: null to name rows `<file>:<row>`"
    )


def open_manifest(fs, path: str, uri: str):
    try:
        return fs.open(path, "rb")
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"manifest {uri}: cannot read: {type(exc).__name__}: {exc}") from None
