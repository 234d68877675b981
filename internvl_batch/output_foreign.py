"""Whether an output holds something the job did not write, found without listing it whole: the first such
name under the output (`output_layout.OWN` decides what is the job's), read entry by entry where the store
allows (a local directory, S3 pages)."""

from __future__ import annotations

import os

from internvl_batch.filesystems import is_local
from internvl_batch.output_layout import OWN, _join, _name, list_output


def first_foreign_entry(fs, path: str, output_path: str) -> str | None:
    """The first name under the output (at its top, in `data/` or in `.internvl-batch/`) that the job does not
    write, as `list_output(...).foreign` names it, or None (also when the output does not exist yet). Bounded:
    stops at the first one (a local directory is read entry by entry, an S3 prefix page by page); other object
    stores are listed whole."""
    s3 = hasattr(fs, "_iterdir") and hasattr(fs, "split_path")
    scan = _first_local if is_local(output_path) else _first_s3 if s3 else None
    if scan is None:
        listing = list_output(fs, path)
        return listing.foreign[0] if listing.foreign else None
    for folder, own in OWN.items():
        name = scan(fs, _join(path, folder), own)
        if name is not None:
            return _join(folder, name) if folder else name
    return None


def _first_local(fs, directory: str, own) -> str | None:
    if not os.path.isdir(directory):
        return None
    with os.scandir(directory) as entries:
        return next((e.name for e in entries if not own(e.name)), None)


def _first_s3(fs, directory: str, own) -> str | None:
    """s3fs: list_objects_v2 pages, one at a time."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(directory)
    prefix = f"{key.strip('/')}/" if key.strip("/") else ""

    async def scan():
        async for entry in fs._iterdir(bucket, prefix=prefix, delimiter="/"):
            name = _name(entry["name"])
            if name and f"{bucket}/{prefix}".rstrip("/") != entry["name"].rstrip("/") and not own(name):
                return name
        return None

    if not fs.exists(directory):  # no bucket yet, or an empty prefix
        return None
    return sync(fs.loop, scan)
