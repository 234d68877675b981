"""What a manifest input format is: one `ManifestFormat` subclass per format, one instance of each in the
registry (`manifest.formats.REGISTRY`). The generic code (`files`, `read`, `discover`, `scan`) asks the
registry, never tests a format's name.

A format's life in a job, in order:

1. on the driver, a file is given the format its suffix selects (`suffixes`; `directory_suffixes`: those a
   folder listing picks up), or the one `input.format` names;
2. on the driver, `plan(file, split_bytes)` cuts the file into units before anything is read (a listing only:
   sizes, no bytes);
3. on the workers, `layout(unit, storage)` for each unit with `needs_layout(unit)`: what must be read of the
   file before its units are final (JSONL: newlines before a byte range; Parquet: row groups; Arrow: record
   batches). It must be small (the driver gets it) and picklable (it returns from a Ray task);
4. on the driver, `units(planned, layouts, split_bytes, first_index)`: a file's final, numbered units;
5. on the workers, `rows(unit, storage, counts)`: the unit's raw rows, read once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.manifest.units import ManifestFile, ReadUnit, open_manifest


@dataclass
class RowCounts:
    """What a format's `rows` counts for the report while reading, besides the rows themselves."""

    blank_lines: int = 0  # blank lines skipped (text formats)
    rows_with_id_field: int = 0  # rows holding the id field (formats with `counts_id_field`)
    skipped: int = 0  # objects under a media root whose suffix no media kind lists
    unlisted: int = 0  # folders under a media root that could not be listed, symlinks that loop


class ManifestFormat:
    """One manifest input format. Subclasses set the class attributes and implement `rows`; those whose files
    are read in several units, or need something read before their units are known, override `plan`,
    `needs_layout`, `layout` and `units`. The defaults: a file is one unit, read whole, without a layout.

    Every method is called with values only (units, storage config): a format holds no state, so its methods
    run alike on the driver, in Ray tasks and in one process (`manifest.local`).
    """

    name: str = ""  # what `input.format` names it, and `ManifestFile.format`
    title: str = ""  # how messages name it ("JSONL"); the name when empty
    suffixes: tuple[str, ...] = ()  # lower-case file suffixes that select it, two-part ones too (`.tar.gz`)
    directory_suffixes: tuple[str, ...] | None = None  # those a folder listing picks up; None: all `suffixes`
    metadata_beside: tuple[str, ...] = ()  # suffixes of a file beside one of ours, of the same stem, that is
    # its metadata and not a manifest (img2dataset's `00000.parquet` beside `00000.tar`)
    counts_id_field: bool = False  # `rows` counts the rows holding the id field (free-form rows, no header
    # or schema to check the id column on): a file where none has one is refused after the scan
    selectable: bool = True  # a choice of `input.format` (the media format is chosen by `input.media` only)

    @property
    def display_name(self) -> str:
        return self.title or self.name

    @property
    def listed_suffixes(self) -> tuple[str, ...]:
        """The suffixes of the files a folder listing reads as this format."""
        return self.suffixes if self.directory_suffixes is None else self.directory_suffixes

    def plan(self, file: ManifestFile, split_bytes: int) -> list[ReadUnit]:
        """The file's units before any layout, in file order with increasing `start` (their `index` is set by
        the caller). Default: one unit, the whole file."""
        return [ReadUnit(0, file, 0, file.size)]

    def needs_layout(self, unit: ReadUnit) -> bool:
        """Whether `layout` must read something of the unit's file before its units are final."""
        return False

    def layout(self, unit: ReadUnit, storage: StorageConfig) -> object:
        """What `units` needs of a unit with `needs_layout` (read on a worker; small, picklable). May check the
        file as a whole (its id column) and raise `ConfigError`."""
        raise NotImplementedError(f"{self.name}: no layout")

    def units(
        self, planned: list[ReadUnit], layouts: list[object], split_bytes: int, first_index: int
    ) -> list[ReadUnit]:
        """The final units of one file, numbered from `first_index` in manifest order, from the units `plan`
        made for it and their layouts (None for units without `needs_layout`). Default: the planned units."""
        return [replace(unit, index=first_index + i) for i, unit in enumerate(planned)]

    def rows(self, unit: ReadUnit, storage: StorageConfig, counts: RowCounts) -> Iterator[tuple[int, object]]:
        """The unit's rows, once, in file order: (number, raw row dict or `ManifestError`). The number is the
        row's 1-based line or row in the file (the unit's `first_line` for its first row); a malformed row is a
        value, never an exception; a file that cannot be read as a whole raises `ConfigError`. Columns are named
        as in the file (the caller renames them and makes ids from numbers when `input.id_column` says so);
        `unit.file.id_field` is the column the ids are read from (None: made from numbers)."""
        raise NotImplementedError


def name_suffix(name: str, multipart: tuple[str, ...] = ()) -> str:
    """A file name's suffix, lower-case: the longest of `multipart` (two-part suffixes: `.tar.gz`) it ends
    with, else its last suffix (`.jsonl`; '' for none)."""
    name = name.lower()
    matching = [suffix for suffix in multipart if suffix.count(".") > 1 and name.endswith(suffix)]
    return max(matching, key=len) if matching else PurePosixPath(name).suffix


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


def read_whole(unit: ReadUnit, storage: StorageConfig) -> bytes:
    """The bytes of the unit's file; a `ConfigError` naming it when they cannot be read."""
    uri = unit.file.uri
    fs, path = fsspec_filesystem(uri, storage)
    with open_manifest(fs, path, uri) as f:
        try:
            return f.read()
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"manifest {uri}: cannot read: {type(exc).__name__}: {exc}") from None
