"""Media roots (`input.media`): the objects under a folder, prefix or glob pattern read as rows, no manifest.

A root is a `ManifestFile` of format `media` whose `uri` is the root as written (`s3://lib/photos/`,
`/data/photos/**/*.jpg`) and whose `media` holds the options (`units.MediaOptions`). Its units fan the listing
out over the workers:

1. `plan` (driver): one unit, nothing listed;
2. `layout` (a worker): the root's first level: the names of its folders (prefixes);
3. `units` (driver): one unit for the objects directly in the root, then units of consecutive folders (their
   whole trees): one folder each up to `TARGET_UNITS` folders, more each above it (at most
   `MAX_FOLDERS_PER_UNIT`), because every unit costs a scan task and a read task, whatever it holds;
4. `rows` (a worker): the unit's objects in name order, one row each: `id` (the path below the root, or the
   full URI with `input.media_id: uri`), `image`/`video`/`document` by suffix, `version` (what identifies the
   object's bytes: S3 and Azure ETag, S3 VersionId where listed, GCS generation, local size and mtime_ns), and
   `question` (`input.media_question`).

Never fatal for one object or folder: an object whose suffix no kind lists is skipped (`RowCounts.skipped`); a
zero-byte object, and a local name that is not UTF-8, is an error row; a folder that cannot be listed, and a symlink to a folder above it (a loop),
are counted (`RowCounts.unlisted`) and logged. An object deleted between listing and reading fails its fetch:
an error row. A glob keeps its static folders as the root (`photos/**/*.jpg`: root `photos`, each object's
path below it matched as fsspec's `glob` would).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import replace

from fsspec.utils import glob_translate

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError, ManifestError
from internvl_batch.filesystems import fsspec_filesystem, is_local, local_path, object_version, scheme_of
from internvl_batch.manifest.formats.base import ManifestFormat, RowCounts
from internvl_batch.manifest.units import ReadUnit

log = logging.getLogger("internvl_batch.manifest")
GLOB_CHARS = "*?["
ROOT_FILES, WHOLE_TREE = 0, 1  # a unit's `stop`: the objects directly in the root, or its folders' whole trees
# Units of a root's folders: as many as the folders up to TARGET_UNITS (the scan's and the read's parallelism),
# then folders grouped, up to MAX_FOLDERS_PER_UNIT a unit (a folder's size is not known before it is listed).
TARGET_UNITS, MAX_FOLDERS_PER_UNIT = 128, 32


def split_root(pattern: str) -> tuple[str, re.Pattern | None]:
    """(the root folder as written, with its scheme; the regular expression the paths below it must match, or
    None for every object): the root of a glob is its folders before the first one with `*`, `?` or `[`."""
    parts = pattern.rstrip("/").split("/")
    first = next((k for k, part in enumerate(parts) if any(c in part for c in GLOB_CHARS)), None)
    if first is None:
        return pattern.rstrip("/"), None
    return "/".join(parts[:first]), re.compile(glob_translate("/".join(parts[first:])))


class MediaFormat(ManifestFormat):
    name = "media"
    title = "media root"
    selectable = False  # never a choice of input.format: media roots come from input.media

    def plan(self, file, split_bytes: int) -> list[ReadUnit]:
        return [ReadUnit(0, file, 0, ROOT_FILES)]

    def needs_layout(self, unit: ReadUnit) -> bool:
        return True

    def layout(self, unit: ReadUnit, storage: StorageConfig) -> list[str]:
        """The names of the root's folders, sorted (symlinks that loop back above them left out)."""
        root, _ = split_root(unit.file.uri)
        if is_local(root):
            root = local_path(root)
            real = os.path.realpath(root)
            try:
                with os.scandir(root) as entries:
                    return sorted(e.name for e in entries if e.is_dir() and not _loops(e.path, real))
            except OSError as exc:
                raise ConfigError(f"media root {root}: cannot list: {type(exc).__name__}: {exc}") from None
        fs, path = fsspec_filesystem(root, storage)
        _fresh(fs, path)
        try:
            entries = fs.ls(path, detail=True)
        except Exception as exc:  # noqa: BLE001 - the root itself must list
            raise ConfigError(f"media root {root}: cannot list: {type(exc).__name__}: {exc}") from None
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")

    def units(self, planned, layouts, split_bytes: int, first_index: int) -> list[ReadUnit]:
        unit, folders = planned[0], layouts[0]
        per_unit = max(1, min(MAX_FOLDERS_PER_UNIT, len(folders) // TARGET_UNITS))
        parts = [replace(unit, folders=(), stop=ROOT_FILES)]
        parts += [
            replace(unit, folders=tuple(folders[k : k + per_unit]), stop=WHOLE_TREE)
            for k in range(0, len(folders), per_unit)
        ]
        return [replace(part, index=first_index + k) for k, part in enumerate(parts)]

    def rows(self, unit: ReadUnit, storage: StorageConfig, counts: RowCounts) -> Iterator[tuple[int, object]]:
        options = unit.file.media
        root, pattern = split_root(unit.file.uri)
        number = 0
        for relative, uri, size, version in _unit_objects(root, unit, storage, counts):
            if pattern is not None and not pattern.match(relative):
                continue
            kind = options.kind_of(relative)
            if kind is None:
                counts.skipped += 1
                continue
            number += 1
            row_id = relative if options.id_mode == "relative" else uri
            if not _is_text(row_id):  # a local name that is not UTF-8: no id or URI can be written for it
                error = ManifestError("the object's name is not UTF-8 text; rename it")
                error.row_id = row_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                yield number, error
                continue
            if not size:
                error = ManifestError(f"zero-byte object {relative!r}")
                error.row_id = row_id
                yield number, error
                continue
            yield number, {"id": row_id, kind: uri, "version": version, "question": options.question}


def _unit_objects(root: str, unit: ReadUnit, storage, counts) -> Iterator[tuple[str, str, int, str]]:
    """(path below the root, URI, size, version) of a unit's objects: the root's own files, or its folders'."""
    if unit.stop == ROOT_FILES:
        yield from _objects(root, "", False, storage, counts)
        return
    for folder in unit.folders:
        yield from _objects(root, folder, True, storage, counts)


def _objects(root: str, part: str, whole_tree: bool, storage, counts) -> Iterator[tuple[str, str, int, str]]:
    """(path below the root, URI, size, version) of the objects of one unit, in name order."""
    if is_local(root):
        root = local_path(root)
        top = os.path.join(root, part) if part else root
        yield from _local_objects(top, part, whole_tree, os.path.realpath(root), counts)
        return
    scheme = scheme_of(root)
    fs, path = fsspec_filesystem(root, storage)
    top = f"{path.rstrip('/')}/{part}" if part else path.rstrip("/")
    _fresh(fs, top)
    try:
        listed = fs.find(top, detail=True) if whole_tree else {e["name"]: e for e in fs.ls(top, detail=True)}
    except Exception as exc:  # noqa: BLE001 - a folder that cannot be listed is counted, not fatal
        counts.unlisted += 1
        log.warning("media root %s: cannot list %s: %s: %s", root, part or ".", type(exc).__name__, exc)
        return
    prefix = path.rstrip("/") + "/"
    for name in sorted(listed):
        info = listed[name]
        if info.get("type") == "directory" or not name.startswith(prefix):
            continue
        yield name[len(prefix) :], f"{scheme}://{name}", int(info.get("size") or 0), object_version(info)


def _local_objects(top: str, relative: str, whole_tree: bool, real_root: str, counts) -> Iterator[tuple]:
    """Files below a local folder, depth first in name order; symlinked folders followed unless they loop."""
    try:
        with os.scandir(top) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        counts.unlisted += 1
        log.warning("media root %s: cannot list %s: %s", real_root, top, exc)
        return
    here = os.path.realpath(top)
    for entry in entries:
        below = f"{relative}/{entry.name}" if relative else entry.name
        try:
            if entry.is_dir():
                if not whole_tree:
                    continue
                if _loops(entry.path, here):
                    counts.unlisted += 1
                    log.warning("media root %s: %s links to a folder above it: not followed", real_root, below)
                    continue
                yield from _local_objects(entry.path, below, True, real_root, counts)
            elif entry.is_file():
                stat = entry.stat()
                yield (
                    below,
                    os.path.abspath(entry.path),
                    stat.st_size,
                    f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}",
                )
        except OSError as exc:  # a broken link, a file gone since the listing
            counts.unlisted += 1
            log.warning("media root %s: cannot read %s: %s", real_root, below, exc)


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _loops(path: str, real_here: str) -> bool:
    """Whether a folder is the folder `real_here` (a real path) or one above it: following it never ends."""
    real = os.path.realpath(path)
    return real_here == real or real_here.startswith(real.rstrip(os.sep) + os.sep)


def _fresh(fs, path: str) -> None:
    """Forget what the filesystem object (fsspec keeps one per process, and Ray reuses worker processes) listed
    before, below `path` too: last night's listing must not stand for tonight's."""
    try:
        fs.invalidate_cache()  # all of it: some filesystems forget a path's parents only, not what is below
    except Exception:  # noqa: BLE001 - a filesystem without a cache
        pass
