"""WebDataset tar shards as manifests (`input.format: webdataset`, `.tar`, `.tar.gz`): one row per sample.

The WebDataset convention (what img2dataset writes): a sample is the run of consecutive tar members that
share a key, the member name up to the first dot of its base name (`00001.jpg`, `00001.json`, `00001.txt`).
A sample becomes a row:

- `id`: the key (or, with `input.id_column`, that field of the sample's JSON);
- `image`: the bytes of its image member (`jpg`, `jpeg`, `png`, `webp`, `bmp`, `gif`, `tif`, `tiff`), held in
  the row like a Parquet dataset's image, never fetched (`<shard>:<n>#1:<member>` in the output's `media`);
- the fields of its `.json` member (a `question`, `task`, ... there are used as in any manifest; the others
  can be passed through with `input.passthrough_columns`);
- its small members that webdataset's own decoders read as text or numbers, each as the column its extension
  names: `.txt`, `.text`, `.transcript` as text; `.cls`, `.cls2`, `.class`, `.count`, `.index`, `.inx` (a
  class label and the like, written as decimal text: what `wds.TarWriter` writes for an int) as an int
  when the text is one, else as the text. They take precedence over JSON fields of the same name.

Shards are read streaming (tar's sequential mode over the object-store stream): no shard is downloaded to
disk. Members are bounded before they are read: a member over `fetch.max_bytes` (from its tar header) is
skipped unread and its sample is an error row; members the row does not use are never read. A `.tar` is
plain tar: a compressed stream is refused (one error row) unless the shard is named `.tar.gz` / `.tgz`, so a
small file cannot expand to gigabytes without notice. A sample without an image, with several images, with
unreadable JSON or with text that is not Unicode is an error row (its id still the key); a shard that is
truncated or corrupt yields error rows for what cannot be read (one row naming the member where reading
stopped), never a failed job. Rows are numbered by sample within the shard (`<shard>:<n>` names rows whose id
cannot be read).
"""

from __future__ import annotations

import gzip
import json
import posixpath
import tarfile
import zlib
from collections.abc import Iterator

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ManifestError
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.manifest.formats.base import ManifestFormat, RowCounts, name_suffix
from internvl_batch.manifest.row_errors import row_error, text_problem
from internvl_batch.manifest.units import ReadUnit, open_manifest

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
# Members read into a column of their own name (webdataset's autodecode: "txt text transcript" -> str,
# "cls cls2 class count index inx" -> int). `.id` is left out: the key is the sample's id.
TEXT_MEMBERS = frozenset({"txt", "text", "transcript"})
NUMBER_MEMBERS = frozenset({"cls", "cls2", "class", "count", "index", "inx"})


def _error(message: str) -> Exception:
    return ManifestError(message)


def sample_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member: `dir/00001.seg.jpg` -> ("dir/00001", "seg.jpg")."""
    directory, base = posixpath.split(name)
    stem, _, extension = base.partition(".")
    return (posixpath.join(directory, stem) if directory else stem), extension.lower()


# The first bytes of compressed streams: tarfile's `r|*` would decompress any of them without a word.
COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
GZIP_SUFFIXES = (".tar.gz", ".tgz")


class WebDatasetFormat(ManifestFormat):
    """One unit per shard (a tar is read in order); a shard's samples are numbered from 1."""

    name = "webdataset"
    title = "WebDataset"
    # gzip-compressed shards are read only when their name says so (a `.tar` is never decompressed).
    suffixes = (".tar", ".tar.gz", ".tgz")
    metadata_beside = (".parquet",)  # img2dataset writes `00000.parquet` (its metadata) beside `00000.tar`

    def rows(self, unit: ReadUnit, storage: StorageConfig, counts: RowCounts) -> Iterator[tuple[int, object]]:
        return webdataset_rows(unit, storage)


class Oversized:
    """A member that was not read: larger than the shard's `max_media_bytes` (`fetch.max_bytes`)."""

    def __init__(self, size: int) -> None:
        self.size = size


def webdataset_rows(unit: ReadUnit, storage: StorageConfig) -> Iterator[tuple[int, dict | Exception]]:
    """The shard's samples as (sample number, raw row or ManifestError), in shard order.

    Memory per sample is bounded: only image, `.json`, text and number members are read, each only when its
    header says it is within `fetch.max_bytes` (others are skipped unread: a tar header cannot lie about how
    much is read), and a sample's second image is not read (the sample is an error anyway). A `.tar` is read as
    plain tar; gzip is decompressed only for shards named `.tar.gz` / `.tgz`."""
    uri = unit.file.uri
    name = posixpath.basename(uri)
    fs, path = fsspec_filesystem(uri, storage)
    number = unit.first_line
    gzipped = name_suffix(uri, GZIP_SUFFIXES) in GZIP_SUFFIXES
    with open_manifest(fs, path, uri) as stream:
        problem = _compression_problem(stream, name, gzipped)
        if problem:
            yield number, _error(problem)
            return
        key, members, last = None, {}, None
        try:
            # tarfile's own gzip reading inflates a whole input buffer at once (1 KB of zeros -> 1 MB) and copies
            # what it holds at every read; gzip.GzipFile inflates no more than is asked for. 1 MiB reads: a
            # skipped member (over the limit, or unused) is passed over in a few large steps.
            source = gzip.GzipFile(fileobj=stream, mode="rb") if gzipped else stream
            with tarfile.open(fileobj=source, mode="r|", bufsize=2**20) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    member_key, extension = sample_key(member.name)
                    if key is not None and member_key != key:
                        yield number, _row(key, members, unit.file.max_media_bytes)
                        number += 1
                        members = {}
                    key = member_key
                    members[extension] = (member.name, _member_data(tar, member, extension, members, unit))
                    last = member.name
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            where = f"after member {last!r}" if last else "at its start"
            yield (
                number,
                _error(
                    f"shard {name} is truncated or corrupt {where}: "
                    f"{type(exc).__name__}: {exc}; the samples after it cannot be read"
                ),
            )
            return
        if key is not None:
            yield number, _row(key, members, unit.file.max_media_bytes)


def _compression_problem(stream, name: str, gzipped: bool) -> str | None:
    """Why the shard is not read at all: compressed without saying so by name, or named .tar.gz but not gzip."""
    head = stream.read(6)
    stream.seek(0)
    kind = next((kind for magic, kind in COMPRESSED if head.startswith(magic)), None)
    if gzipped and kind != "gzip":
        return f"shard {name} is named like a gzip-compressed tar but is not gzip data"
    if not gzipped and kind is not None:
        return (
            f"shard {name} is {kind}-compressed: compressed shards are read only when named .tar.gz or .tgz "
            "(gzip), so that a small file cannot expand without notice"
        )
    return None


def _member_data(tar, member, extension: str, members: dict, unit: ReadUnit) -> bytes | Oversized | None:
    """A member's bytes when the sample needs them and they are within the limit; `Oversized` when they are
    not; None for a member the row never uses (or a second image), left unread."""
    kind = extension.rsplit(".", 1)[-1]
    wanted = (
        extension == "json"
        or extension in TEXT_MEMBERS
        or extension in NUMBER_MEMBERS
        or (kind in IMAGE_EXTENSIONS and not _images(members))
    )
    if not wanted:
        return None
    limit = unit.file.max_media_bytes
    if limit is not None and member.size > limit:
        return Oversized(member.size)
    reader = tar.extractfile(member)
    return reader.read() if reader is not None else b""


def _images(members: dict) -> list[tuple[str, object]]:
    return [(name, data) for ext, (name, data) in members.items() if ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS]


def _number(text: str) -> int | str:
    """A number member's value: the int its text spells (`"3"`, `" 3\\n"`), else the text as written."""
    try:
        return int(text.strip())
    except ValueError:
        return text


def _row(key: str, members: dict[str, tuple[str, object]], limit: int | None) -> dict | Exception:
    # A bad sample keeps its key as its id: the problem rides in `image`, which row checking raises.
    if text_problem({"id": key}):
        return row_error(f"sample {key!a}: the member name is not UTF-8 text", None)
    row: dict = {"id": key}
    oversized = [(n, d.size) for n, d in members.values() if isinstance(d, Oversized)]
    if oversized:
        member, size = oversized[0]
        row["image"] = _error(f"sample {key}: member {member} is {size} bytes, over fetch.max_bytes={limit} (not read)")
        return row
    if "json" in members:
        try:
            fields = json.loads(members["json"][1])
        except ValueError as exc:
            return {"id": key, "image": _error(f"sample {key}: {members['json'][0]} is not valid JSON: {exc}")}
        if not isinstance(fields, dict):
            return {"id": key, "image": _error(f"sample {key}: {members['json'][0]} is not a JSON object")}
        problem = text_problem(fields)
        if problem:
            return row_error(f"sample {key}: {members['json'][0]}: {problem}", key)
        row.update(fields)
        row["id"] = key  # the key, unless input.id_column names a field of the JSON (renamed after reading)
    for extension, (_, data) in members.items():
        if extension in TEXT_MEMBERS:
            row[extension] = data.decode("utf-8", errors="replace")
        elif extension in NUMBER_MEMBERS:
            row[extension] = _number(data.decode("utf-8", errors="replace"))
    images = _images(members)
    if len(images) != 1:
        found = ", ".join(sorted(members)) or "nothing"
        row["image"] = _error(
            f"sample {key}: {'no image' if not images else 'several images'} among its members ({found})"
        )
        return row
    name, data = images[0]
    row["image"] = {"bytes": data, "path": posixpath.basename(name)}
    return row
