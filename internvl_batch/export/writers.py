"""Where an export's files go: shards of at most `max_items_per_file` items, and one text file per document.

`ShardWriter` takes items and writes each full shard at once (the only items held are one shard's): a file
`out` when everything fits one shard, else `<stem>-00000<suffix>`, `<stem>-00001<suffix>`, ... (a writer of a
partition, on Ray: `<stem>-<partition>-<k><suffix>`). An encoder turns a shard's items into files: (variant,
bytes), the variant added to the stem (COCO's captions file). Files are written whole or not at all
(`output_dir.write_output_file`), locally or on object storage.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Callable
from urllib.parse import quote

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.output_dir import write_output_file

Encoder = Callable[[list], list[tuple[str, bytes]]]
MAX_NAME_BYTES = 200  # a file name component longer than this is cut and given a hash of the whole


def split_name(out: str) -> tuple[str, str]:
    """`out` -> (stem, suffix): `tasks.json` -> (`tasks`, `.json`)."""
    stem, suffix = posixpath.splitext(out)
    return (stem, suffix) if suffix else (out, "")


def shard_pattern(out: str, variants: tuple[str, ...] = ("",)) -> re.Pattern:
    """The names a ShardWriter of `out` may write (to remove an earlier export's)."""
    stem, suffix = split_name(posixpath.basename(out))
    alternatives = "|".join(re.escape(v) for v in variants)
    return re.compile(rf"{re.escape(stem)}(-\d{{5}}(-\d{{4}})?)?({alternatives}){re.escape(suffix)}")


class ShardWriter:
    def __init__(self, out: str, storage: StorageConfig, encode: Encoder, max_items: int, partition: int | None = None):
        self.out, self.storage, self.encode, self.max_items = out, storage, encode, max(1, max_items)
        self.partition = partition
        self.items: list = []
        self.shards = 0
        self.files: list[str] = []

    def add(self, items: list) -> None:
        for item in items:
            if len(self.items) >= self.max_items:  # flushed only once more come: exactly a file's worth is `out`
                self._flush(single=False)
            self.items.append(item)

    def close(self) -> list[str]:
        """Write what is left; the files written, in order."""
        if self.items or (self.shards == 0 and self.partition is None):
            self._flush(single=self.shards == 0 and self.partition is None)
        return self.files

    def _flush(self, single: bool) -> None:
        stem, suffix = split_name(self.out)
        if not single:
            part = "" if self.partition is None else f"-{self.partition:05d}"
            stem = f"{stem}{part}-{self.shards:0{4 if self.partition is not None else 5}d}"
        for variant, data in self.encode(self.items):
            self.files.append(write_output_file(f"{stem}{variant}{suffix}", self.storage, data))
        self.items, self.shards = [], self.shards + 1


def document_file_name(doc_id: str, task: str | None = None) -> str:
    """A safe relative path for a document's text: each `/`-separated part of the id percent-encoded (all but
    letters, digits, `.`, `_`, `-`; a part of dots wholly), long parts cut with a hash, `.txt` added (with
    `.<task>` before it when given). Distinct ids give distinct names; nothing can leave the folder."""
    parts = []
    for part in doc_id.split("/"):
        safe = quote(part, safe="-_.")
        if not safe.strip("."):
            safe = safe.replace(".", "%2E") or "%00"
        if len(safe.encode()) > MAX_NAME_BYTES:
            safe = safe[: MAX_NAME_BYTES - 17] + "~" + hashlib.sha256(part.encode()).hexdigest()[:16]
        parts.append(safe)
    return "/".join(parts) + (f".{quote(task, safe='-_')}" if task else "") + ".txt"


def check_destination(out: str, storage: StorageConfig, overwrite: bool, pattern: re.Pattern | None) -> None:
    """Refuse (ConfigError) an earlier export at `out` unless `overwrite` (then its files matching `pattern`,
    the shard names, are removed; a folder of text files is written into, files of the same name replaced)."""
    fs, path = fsspec_filesystem(out, storage)
    if pattern is None:  # a folder
        if fs.exists(path) and fs.ls(path) and not overwrite:
            raise ConfigError(f"{out} is not empty: choose another folder, or pass --overwrite to write into it")
        return
    parent = posixpath.dirname(path.rstrip("/")) or "."
    earlier = [
        p
        for p in (fs.ls(parent, detail=False) if fs.exists(parent) else [])
        if pattern.fullmatch(posixpath.basename(p))
    ]
    if earlier and not overwrite:
        raise ConfigError(f"{out} (or its shards) exists: choose another name, or pass --overwrite to replace it")
    for file in earlier:
        fs.rm(file)
