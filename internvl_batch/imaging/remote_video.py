"""Videos read from object storage in byte ranges instead of downloaded whole (`video.ranged_reads`).

`probe` (on the fetch threads) looks at an object's size (checked against `video.max_bytes` before anything
else is read) and its first bytes: an MP4/MOV (ISO BMFF) becomes a `RemoteVideo`, a small picklable value
(URI, size, settings) that the decoder opens itself, in whichever process it runs (`isolated_decoder.py` sends
it to its child, which makes its own filesystem client), as a seekable file object. PyAV then reads the index
(`moov`, at the start or the end) and the byte ranges of the groups of pictures it decodes (`pyav_video.py`
builds its frame table from the index). Other containers are downloaded as before: their demuxers, or the
frame count, need the whole file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.errors import FetchError
from internvl_batch.filesystems import OBJECT_STORE_SCHEMES, fsspec_filesystem, object_version, scheme_of
from internvl_batch.imaging.mp4_index import is_iso_bmff
from internvl_batch.storage import Deadline  # one read's deadline, as the fetcher's reads

# The object is read in aligned blocks, the last MAX_BLOCKS kept (fsspec's "blockcache"): FFmpeg goes back to
# the first block after reading a moov at the end, and this module's moov read goes over the same bytes, so a
# cache of one block ("readahead", fsspec's default) fetched them three times (measured). A group of pictures of
# 1080p H.264 is ~1-4 MB: a few requests each, and a sampled frame costs little more than its own group's bytes.
BLOCK_BYTES = 512 * 2**10
MAX_BLOCKS = 32  # 16 MB held at most per open video
HEAD_BYTES = 16


@dataclass(frozen=True)
class RemoteVideo:
    """An MP4/MOV on an object store, to be read in ranges: `open()` gives a seekable file object."""

    uri: str
    size: int
    storage: dict  # StorageConfig / FetchConfig as plain values: this travels to the decoder's child process
    fetch: dict
    tag: str | None = None  # the object's ETag / generation when probed (`object_version`), None if the store gave none

    def open(self) -> ObjectFile:
        storage, fetch = StorageConfig(**self.storage), FetchConfig(**self.fetch)
        fs, path = fsspec_filesystem(self.uri, storage, fetch)
        handle = fs.open(
            path, "rb", block_size=BLOCK_BYTES, cache_type="blockcache", cache_options={"maxblocks": MAX_BLOCKS}
        )
        # Replaced since it was probed: its limit check no longer holds, and the table of one version must not be
        # read against the bytes of another.
        tag = object_version(getattr(handle, "details", None) or {})
        if handle.size != self.size or (self.tag and tag and tag != self.tag):
            handle.close()
            raise FetchError(
                f"{self.uri}: the object was replaced while being read (size {self.size} -> {handle.size})"
            )
        return ObjectFile(handle, fetch)


def is_ranged_candidate(uri: str) -> bool:
    return scheme_of(uri) in OBJECT_STORE_SCHEMES


def probe(uri: str, storage: StorageConfig, fetch: FetchConfig, max_bytes: int, limit_name: str):
    """A `RemoteVideo` for an MP4/MOV object within `max_bytes`; None for any other container (download it).
    Raises for an object that is too large (`FetchError` naming the limit) or cannot be read."""
    fs, path = fsspec_filesystem(uri, storage, fetch)
    deadline = Deadline(fetch.deadline_s)
    info = deadline.run(fs, fs._info, path)
    size = info.get("size")
    if info.get("type") == "directory" or not size:
        return None  # the fetcher reports these as it always has
    if size > max_bytes:
        raise FetchError(f"{uri}: {size} bytes exceeds {limit_name}={max_bytes}")
    head = deadline.run(fs, fs._cat_file, path, start=0, end=min(size, HEAD_BYTES))
    if not is_iso_bmff(head):
        return None
    return RemoteVideo(uri, size, storage.model_dump(), fetch.model_dump(), object_version(info))


class ObjectFile:
    """The file object PyAV reads: an fsspec file whose reads are retried on transient errors (the clients'
    own retries are off: `filesystems.py`), with `fetch.retries` and its backoff. `requested_bytes` is what
    was fetched from the store so far (fsspec's cache statistics)."""

    def __init__(self, handle, fetch: FetchConfig) -> None:
        self.handle, self.retries, self.backoff_s = handle, fetch.retries, fetch.backoff_s
        self.size = handle.size

    def read(self, n: int = -1) -> bytes:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            at = self.handle.tell()
            try:
                return self.handle.read(n)
            except (FileNotFoundError, PermissionError):
                raise
            except Exception:  # noqa: BLE001 - transient until proven otherwise; the last one is raised
                if attempt == self.retries:
                    raise
                self.handle.seek(at)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def requested_bytes(self) -> int:
        cache = getattr(self.handle, "cache", None)
        return getattr(cache, "total_requested_bytes", 0)

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> ObjectFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
