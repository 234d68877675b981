"""WebDataset tar shards as manifests (`input.format: webdataset`, or `.tar`): one row per sample.

The WebDataset convention (what img2dataset writes): a sample is the run of consecutive tar members that
share a key, the member name up to the first dot of its base name (`00001.jpg`, `00001.json`, `00001.txt`).
A sample becomes a row:

- `id`: the key (or, with `input.id_column`, that field of the sample's JSON);
- `image`: the bytes of its image member (`jpg`, `jpeg`, `png`, `webp`, `bmp`, `gif`, `tif`, `tiff`), held in
  the row like a Parquet dataset's image, never fetched (`<shard>:<n>#1:<member>` in the output's `media`);
- the fields of its `.json` member (a `question`, `task`, ... there are used as in any manifest; the others
  can be passed through with `input.passthrough_columns`), and its `.txt` member as `txt`.

Shards are read streaming (tar's sequential mode over the object-store stream): no shard is downloaded to
disk. A sample without an image, with several images, or with unreadable JSON is an error row (its id still
the key); a shard that
is truncated or corrupt yields error rows for what cannot be read (one row naming the member where reading
stopped), never a failed job. Rows are numbered by sample within the shard (`<shard>:<n>` names rows whose id
cannot be read).
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator

from internvl_batch.config import StorageConfig
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.manifest.files import ReadUnit, open_manifest

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})


def _error(message: str) -> Exception:
    from internvl_batch.errors import ManifestError

    return ManifestError(message)


def sample_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member: `dir/00001.seg.jpg` -> ("dir/00001", "seg.jpg")."""
    directory, base = posixpath.split(name)
    stem, _, extension = base.partition(".")
    return (posixpath.join(directory, stem) if directory else stem), extension.lower()


def webdataset_rows(unit: ReadUnit, storage: StorageConfig) -> Iterator[tuple[int, dict | Exception]]:
    """The shard's samples as (sample number, raw row or ManifestError), in shard order."""
    uri = unit.file.uri
    fs, path = fsspec_filesystem(uri, storage)
    number = unit.first_line
    with open_manifest(fs, path, uri) as stream:
        key, members, last = None, {}, None
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    member_key, extension = sample_key(member.name)
                    if key is not None and member_key != key:
                        yield number, _row(key, members)
                        number += 1
                        members = {}
                    key = member_key
                    reader = tar.extractfile(member)
                    members[extension] = (member.name, reader.read() if reader is not None else b"")
                    last = member.name
        except (tarfile.TarError, EOFError, OSError) as exc:
            where = f"after member {last!r}" if last else "at its start"
            yield (
                number,
                _error(
                    f"shard {posixpath.basename(uri)} is truncated or corrupt {where}: "
                    f"{type(exc).__name__}: {exc}; the samples after it cannot be read"
                ),
            )
            return
        if key is not None:
            yield number, _row(key, members)


def _row(key: str, members: dict[str, tuple[str, bytes]]) -> dict:
    # A bad sample keeps its key as its id: the problem rides in `image`, which row checking raises.
    row: dict = {"id": key}
    if "json" in members:
        try:
            fields = json.loads(members["json"][1])
        except ValueError as exc:
            return {"id": key, "image": _error(f"sample {key}: {members['json'][0]} is not valid JSON: {exc}")}
        if not isinstance(fields, dict):
            return {"id": key, "image": _error(f"sample {key}: {members['json'][0]} is not a JSON object")}
        row.update(fields)
        row["id"] = key  # the key, unless input.id_column names a field of the JSON (renamed after reading)
    if "txt" in members:
        row["txt"] = members["txt"][1].decode("utf-8", errors="replace")
    images = [
        (name, data) for extension, (name, data) in members.items() if extension.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS
    ]
    if len(images) != 1:
        found = ", ".join(sorted(members)) or "nothing"
        row["image"] = _error(
            f"sample {key}: {'no image' if not images else 'several images'} among its members ({found})"
        )
        return row
    name, data = images[0]
    row["image"] = {"bytes": data, "path": posixpath.basename(name)}
    return row
