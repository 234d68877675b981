"""Manifest files and read units: what the driver decides about manifests, without reading any rows.

The driver expands glob patterns into `ManifestFile`s (a listing: cheap), gives each its format (its suffix,
or `input.format`), and cuts them into `ReadUnit`s that workers read in parallel. How a file is cut is its
format's business (`manifest.formats`: JSONL byte ranges, Parquet runs of row groups, Arrow runs of record
batches, one unit per CSV file or WebDataset shard); this module only asks the registry:

    plan_units (driver)  ->  unit_layout of `units_needing_layout` (workers: `read.unit_layout`)  ->  number_units

`plan_read_units` is that pass, whoever runs the layouts (Ray tasks in `pipeline.prepass`, a loop in
`manifest.local`). Which files a pattern stands for (globs, brace ranges, folders) is `manifest.discover`'s
business.

A unit's `index` orders all units in manifest order (files in the sorted order of their patterns, then by
offset), which is the order "first occurrence" of a duplicate id refers to.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import replace

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import OBJECT_STORE_SCHEMES, SUPPORTED_SCHEMES, fsspec_filesystem, scheme_of
from internvl_batch.manifest.discover import find_manifests
from internvl_batch.manifest.formats import (
    AUTO,
    format_for_suffix,
    format_of,
    known_suffixes,
    manifest_suffix,
    selectable_format,
)
from internvl_batch.manifest.formats.media import split_root
from internvl_batch.manifest.units import ManifestFile, MediaOptions, ReadUnit

__all__ = [
    "detect_format",
    "expand_manifests",
    "expand_media",
    "file_labels",
    "input_files",
    "input_renames",
    "needs_layout",
    "number_units",
    "plan_read_units",
    "plan_units",
    "units_needing_layout",
]


def detect_format(uri: str, configured: str) -> str:
    """The name of the format a manifest is read as: `configured` (input.format) unless it is "auto", else the
    one its suffix selects; a `ConfigError` for an unknown name or a suffix no format claims."""
    if configured != AUTO:
        return selectable_format(configured).name
    suffix = manifest_suffix(uri.split("?")[0])
    fmt = format_for_suffix(suffix)
    if fmt is None:
        raise ConfigError(
            f"manifest {uri}: cannot tell the format from {suffix or 'no extension'!r} "
            f"(known: {', '.join(known_suffixes())}); set input.format"
        )
    return fmt.name


def expand_manifests(
    patterns: list[str],
    storage: StorageConfig,
    configured_format: str = AUTO,
    renames: dict[str, str | None] | None = None,
    max_media_bytes: int | None = None,
) -> list[ManifestFile]:
    """Patterns -> manifest files, in the order of the patterns (what each stands for: `discover`; sizes from
    the listing). No match is fatal. `renames`: columns read under another name (`input.image_column` ->
    `image`); {"id": None} means ids are made from each row's position (`input.id_column: null`);
    `max_media_bytes`: the most bytes of one image held in a manifest (`fetch.max_bytes`)."""
    if configured_format != AUTO:
        selectable_format(configured_format)  # an unknown input.format fails before any listing
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


def expand_media(roots: list[str], storage: StorageConfig, options: MediaOptions) -> list[ManifestFile]:
    """Media roots (`input.media`) -> one `ManifestFile` of format `media` each (`formats/media.py`), after one
    check per root on the driver: its folder exists (a glob's static folders). What it holds is listed on the
    workers."""
    files = []
    for pattern in roots:
        scheme = scheme_of(pattern)
        if scheme and scheme not in SUPPORTED_SCHEMES:
            raise ConfigError(f"media root {pattern}: unsupported URI scheme {scheme!r}")
        root, _ = split_root(pattern)
        fs, path = fsspec_filesystem(root, storage)
        try:
            kind = fs.info(path).get("type") if fs.exists(path) else None
        except Exception as exc:  # noqa: BLE001 - any failure to look is fatal here
            raise ConfigError(f"media root {pattern}: cannot list: {type(exc).__name__}: {exc}") from None
        if kind != "directory":
            what = "is a file: give its folder, or a glob pattern" if kind else "no such folder or prefix"
            raise ConfigError(f"media root {pattern}: {what}")
        label = posixpath.basename(root.rstrip("/")) or root
        files.append(ManifestFile(pattern, "media", 0, label, media=options))
    return files


def input_files(input_config, storage: StorageConfig, max_media_bytes: int | None) -> list[ManifestFile]:
    """Everything a job reads: its manifest files (`input.manifests`), then its media roots (`input.media`)."""
    files = expand_manifests(
        input_config.manifests, storage, input_config.format, input_renames(input_config), max_media_bytes
    )
    options = MediaOptions(
        tuple(input_config.media_image_suffixes),
        tuple(input_config.media_video_suffixes),
        tuple(input_config.media_document_suffixes),
        input_config.media_id,
        input_config.media_question,
    )
    return files + expand_media(input_config.media, storage, options)


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
    """Units before layout, numbered in manifest order: each file's format plans its own (`ManifestFormat.plan`:
    JSONL byte ranges with first lines still unknown, one unit per other file)."""
    units: list[ReadUnit] = []
    for file in files:
        units += [replace(unit, index=len(units) + i) for i, unit in enumerate(format_of(file).plan(file, split_bytes))]
    return units


def needs_layout(unit: ReadUnit) -> bool:
    """Whether something must be read from the unit's file (on a worker) before its units are final."""
    return format_of(unit.file).needs_layout(unit)


def units_needing_layout(units: list[ReadUnit]) -> list[ReadUnit]:
    """The planned units whose layout `read.unit_layout` must read (what `number_units` gets for them)."""
    return [unit for unit in units if needs_layout(unit)]


def number_units(units: list[ReadUnit], layouts: dict[int, object], split_bytes: int) -> list[ReadUnit]:
    """Final units in manifest order, from the planned units and the layouts (`read.unit_layout`) of those that
    needed one, by unit index: each file's units are made by its format (`ManifestFormat.units`)."""
    out: list[ReadUnit] = []
    for planned in _per_file(units):
        fmt = format_of(planned[0].file)
        out += fmt.units(planned, [layouts.get(unit.index) for unit in planned], split_bytes, len(out))
    return out


def plan_read_units(
    files: list[ManifestFile], split_bytes: int, layouts_of: Callable[[list[ReadUnit]], list]
) -> list[ReadUnit]:
    """Manifest files -> final read units: plan, the layouts of the units that need one, number. `layouts_of`
    maps `read.unit_layout` over a list of units and returns their layouts in order (in this process, or as
    Ray tasks: `pipeline.prepass.read_units`)."""
    units = plan_units(files, split_bytes)
    todo = units_needing_layout(units)
    layouts = layouts_of(todo) if todo else []
    return number_units(units, {unit.index: layout for unit, layout in zip(todo, layouts)}, split_bytes)


def _per_file(units: list[ReadUnit]) -> list[list[ReadUnit]]:
    """The planned units in runs, one per planned file: consecutive units of the same file with increasing
    starts (a file listed twice is two runs)."""
    runs: list[list[ReadUnit]] = []
    for unit in units:
        if runs and runs[-1][-1].file == unit.file and unit.start > runs[-1][-1].start:
            runs[-1].append(unit)
        else:
            runs.append([unit])
    return runs
