"""The manifest input formats: one line per format in `REGISTRY`, and what the rest of the code derives from it.

A format is a `ManifestFormat` (`base.py`: its contract): its name (`input.format`), the suffixes that select
it, how a file is cut into read units and how a unit's rows are read. Nothing outside this package tests a
format's name: `files` (detection, units), `read` (rows, layouts), `discover` (what a folder listing picks up)
and `scan` ask the functions below, which read `REGISTRY` at each call (so a test may replace it).

The registry's order is the order of the suffixes in messages (folder listings: Parquet and Arrow first).
"""

from __future__ import annotations

from internvl_batch.errors import ConfigError
from internvl_batch.manifest.formats.arrow import ArrowFormat
from internvl_batch.manifest.formats.base import ManifestFormat, RowCounts, name_suffix
from internvl_batch.manifest.formats.csv import CsvFormat
from internvl_batch.manifest.formats.jsonl import JsonlFormat
from internvl_batch.manifest.formats.media import MediaFormat
from internvl_batch.manifest.formats.parquet import ParquetFormat
from internvl_batch.manifest.formats.webdataset import WebDatasetFormat
from internvl_batch.manifest.units import ManifestFile

REGISTRY: tuple[ManifestFormat, ...] = (
    ParquetFormat(),
    ArrowFormat(),
    JsonlFormat(),
    CsvFormat(),
    WebDatasetFormat(),
    MediaFormat(),
)

AUTO = "auto"  # input.format's default: each file's format from its suffix

__all__ = [
    "AUTO",
    "REGISTRY",
    "ManifestFormat",
    "RowCounts",
    "format_choices",
    "format_for_suffix",
    "format_named",
    "format_names",
    "format_of",
    "known_suffixes",
    "listed_suffixes",
    "manifest_suffix",
    "registered",
    "selectable_format",
]


def registered() -> tuple[ManifestFormat, ...]:
    """The registered formats, in registry order (`REGISTRY` as it is at the call)."""
    return REGISTRY


def format_names() -> list[str]:
    """The names `input.format` may take (the registered formats' that are `selectable`), in registry order."""
    return [fmt.name for fmt in REGISTRY if fmt.selectable]


def format_choices() -> str:
    """What `input.format` may be, for messages: `auto (by extension) or one of: parquet, arrow, ...`."""
    return f"{AUTO} (by extension) or one of: {', '.join(format_names())}"


def format_named(name: str) -> ManifestFormat:
    """The format called `name`; a `ConfigError` naming the known formats when there is none."""
    for fmt in REGISTRY:
        if fmt.name == name:
            return fmt
    raise ConfigError(f"input.format: unknown manifest format {name!r}; it must be {format_choices()}")


def selectable_format(name: str) -> ManifestFormat:
    """`format_named` for a name `input.format` gives: only the formats it may choose."""
    fmt = format_named(name)
    if not fmt.selectable:
        raise ConfigError(f"input.format: {name!r} is not a manifest format; it must be {format_choices()}")
    return fmt


def format_of(file: ManifestFile) -> ManifestFormat:
    """The format a manifest file was given (`ManifestFile.format`)."""
    return format_named(file.format)


def known_suffixes() -> list[str]:
    """Every suffix that selects a format, in registry order."""
    return [suffix for fmt in REGISTRY for suffix in fmt.suffixes]


def listed_suffixes() -> list[str]:
    """The suffixes of the files a folder listing reads as manifests (`.json` is not among them)."""
    return [suffix for fmt in REGISTRY for suffix in fmt.listed_suffixes]


def manifest_suffix(name: str) -> str:
    """The suffix that tells a manifest's format: `.jsonl`, `.tar`, and the two-part ones (`.tar.gz`)."""
    return name_suffix(name, tuple(known_suffixes()))


def format_for_suffix(suffix: str) -> ManifestFormat | None:
    """The format a (lower-case) suffix selects, or None; the first registered wins should two claim it."""
    return next((fmt for fmt in REGISTRY if suffix in fmt.suffixes), None)
