"""The media fetcher: reads media by URI with bounded retries on transient failures.

Reads are retried with exponential backoff on transient failures (5xx, throttling, timeouts, resets) up to
`fetch.retries` times; permanent ones (missing object, access denied, a directory, too large) fail at once.
URIs and filesystems live in `filesystems.py`.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.errors import FetchError, RowError, UnsupportedURIError
from internvl_batch.filesystems import HTTP_SCHEMES, fsspec_filesystem, is_local, scheme_of
from internvl_batch.http_media import HttpReader
from internvl_batch.local_media import LocalRoots

_PERMANENT = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FetchError,
    UnsupportedURIError,
)


@dataclass(frozen=True)
class KindPolicy:
    """How one media kind is read: its size limit (and the config field that sets it) and, for kinds that
    can be decoded from a file, the size above which the bytes go to a temporary file instead of memory."""

    max_bytes: int
    limit_name: str
    spill_bytes: int | None = None


@dataclass
class LocalFile:
    """Media to decode from a path: the user's own local file, or a temporary copy that `cleanup` removes."""

    path: str
    temporary: bool = False

    def cleanup(self) -> None:
        if self.temporary:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class MediaFetcher:
    """Reads media by URI, many at a time, with bounded retries. Build once per actor.

    Returns bytes, or a `LocalFile` for kinds with a `spill_bytes` policy (videos): local files are used in
    place and large remote ones are streamed to a bounded temporary file, so a long video never sits in
    memory whole. Callers must `cleanup()` what they get back (`release`).
    """

    def __init__(
        self,
        storage: StorageConfig,
        fetch: FetchConfig,
        policies: dict[str, KindPolicy] | None = None,
        temp_dir: str | None = None,
    ) -> None:
        self.storage = storage
        self.fetch_config = fetch
        self.policies = {"image": KindPolicy(fetch.max_bytes, "fetch.max_bytes"), **(policies or {})}
        self.temp_dir = temp_dir
        self.local_roots = LocalRoots(fetch.local_roots)  # which local files media may be read from
        self._pool = ThreadPoolExecutor(max_workers=fetch.threads, thread_name_prefix="fetch")
        self._http = None  # http_media.HttpReader, made on the first HTTP(S) URL

    def fetch(self, uri: str, kind: str = "image") -> bytes | LocalFile:
        attempts = self.fetch_config.retries + 1
        delay = self.fetch_config.backoff_s
        for attempt in range(1, attempts + 1):
            try:
                return self._read(uri, self.policies[kind])
            except _PERMANENT as exc:
                raise _as_fetch_error(uri, exc) from None
            except Exception as exc:  # noqa: BLE001 - transient until proven otherwise
                if _is_denied(exc):
                    raise FetchError(f"{uri}: access denied") from None
                if attempt == attempts:
                    reason = " ".join(str(exc).split())[:300]
                    raise FetchError(
                        f"{uri}: gave up after {attempts} attempts: {type(exc).__name__}: {reason}"
                    ) from None
                wait = delay
                retry_after = getattr(exc, "retry_after", None)  # an HTTP server's Retry-After, within a cap
                if retry_after is not None:
                    wait = max(wait, min(retry_after, self.fetch_config.max_retry_after_s))
                time.sleep(wait)
                delay *= 2
        raise AssertionError("unreachable")

    def fetch_many(self, items: list[tuple[str, str]]) -> list[bytes | LocalFile | Exception]:
        """Bytes, a LocalFile or the exception, per (uri, media kind), in order."""

        def one(item: tuple[str, str]):
            try:
                return self.fetch(*item)
            except Exception as exc:  # noqa: BLE001 - returned as a value for the row
                return exc

        # Threads hide object-store latency; local files are read in this thread (a handoff costs more than
        # a local read, and a missing file must cost next to nothing).
        remote = [i for i, (uri, _) in enumerate(items) if not is_local(uri)]
        results = [None if not is_local(uri) else one((uri, kind)) for uri, kind in items]
        for i, value in zip(remote, self._pool.map(one, [items[i] for i in remote])):
            results[i] = value
        return results

    @staticmethod
    def release(fetched) -> None:
        """Remove the temporary files among fetched values."""
        for value in fetched:
            if isinstance(value, LocalFile):
                value.cleanup()

    def _read(self, uri: str, policy: KindPolicy) -> bytes | LocalFile:
        if is_local(uri):
            path = self.local_roots.path_of(uri)  # refused before the file is even stat'ed
            info = os.stat(path)  # one call: a missing file fails here, cheaply
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(f"{path} is a directory")
            _check_size(uri, info.st_size, policy)
            if policy.spill_bytes is not None:
                return LocalFile(path)
            with open(path, "rb") as f:
                return f.read()
        if scheme_of(uri) in HTTP_SCHEMES:
            return self._read_http(uri, policy)
        fs, path = fsspec_filesystem(uri, self.storage, self.fetch_config)
        if getattr(fs, "async_impl", False):
            return self._read_object(fs, path, uri, policy)
        with fs.open(path, "rb") as f:  # a synchronous filesystem: no deadline (open() learns the size)
            size = getattr(f, "size", None)
            if size is not None:
                _check_size(uri, size, policy)
            if policy.spill_bytes is None or (size is not None and size <= policy.spill_bytes):
                return f.read()
            return self._spill(f, uri, policy)

    def _read_object(self, fs, path: str, uri: str, policy: KindPolicy) -> bytes | LocalFile:
        """An object-store read (s3fs, gcsfs, adlfs are asynchronous) under `fetch.deadline_s` in all.

        The clients' timeouts bound each socket read only, so an endpoint that trickles a byte at a time never
        times out; here every request is a coroutine on the filesystem's event loop that is cancelled (its
        connection closed) when the read's deadline passes."""
        deadline = Deadline(self.fetch_config.deadline_s)
        info = deadline.run(fs, fs._info, path)
        if info.get("type") == "directory":
            raise IsADirectoryError(f"{uri} is a directory")
        size = info.get("size")
        if size is not None:
            _check_size(uri, size, policy)
        if policy.spill_bytes is None or (size is not None and size <= policy.spill_bytes):
            data = deadline.run(fs, fs._cat_file, path)
            _check_size(uri, len(data), policy)  # the object may have changed since its size was read
            return data
        return self._spill(_RangeReader(fs, path, size, deadline), uri, policy)

    def _read_http(self, uri: str, policy: KindPolicy) -> bytes | LocalFile:
        if self._http is None:
            self._http = HttpReader(self.fetch_config)
        try:
            if policy.spill_bytes is None:
                return self._http.read(uri, policy.max_bytes, policy.limit_name)
            # Kinds decoded from a file (videos) stream to a temporary file, never whole into memory.
            handle = tempfile.NamedTemporaryFile(prefix="internvl-media-", dir=self.temp_dir, delete=False)
            try:
                with handle:
                    self._http.read(uri, policy.max_bytes, policy.limit_name, sink=handle)
            except BaseException:
                os.unlink(handle.name)
                raise
            return LocalFile(handle.name, temporary=True)
        except FetchError as exc:
            raise type(exc)(f"{uri}: {exc}") from None

    def _spill(self, stream, uri: str, policy: KindPolicy) -> LocalFile:
        handle = tempfile.NamedTemporaryFile(prefix="internvl-media-", dir=self.temp_dir, delete=False)
        written = 0
        try:
            with handle:
                while chunk := stream.read(8 * 2**20):
                    written += len(chunk)
                    _check_size(uri, written, policy)  # bounded even if the store misreported the size
                    handle.write(chunk)
        except BaseException:
            os.unlink(handle.name)
            raise
        return LocalFile(handle.name, temporary=True)


class DeadlineExceeded(Exception):
    """A read that took longer than `fetch.deadline_s` in all (retried like a timeout). Not a TimeoutError:
    fsspec replaces those with a message-less FSTimeoutError."""


class Deadline:
    """The time left to one read; `run` calls an async filesystem's method within it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0:
            raise self.exceeded()
        return left

    def exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"the read took longer than fetch.deadline_s={self.seconds:g}")

    def run(self, fs, method, *args, **kwargs):
        """`method(*args, **kwargs)` (a coroutine function of `fs`) on `fs`'s event loop, cancelled (its
        connection closed) if it is still running when the deadline passes."""
        from fsspec.asyn import sync

        return sync(fs.loop, self._bounded, method, args, kwargs, self.left())

    async def _bounded(self, method, args, kwargs, left: float):
        import asyncio

        try:
            return await asyncio.wait_for(method(*args, **kwargs), left)
        except asyncio.TimeoutError:
            if time.monotonic() < self.ends:  # a client's own timeout (aiohttp's are asyncio.TimeoutErrors)
                raise
            raise self.exceeded() from None


class _RangeReader:
    """`read(n)` over an object in ranged requests, each within the read's deadline (for `_spill`)."""

    def __init__(self, fs, path: str, size: int | None, deadline: Deadline) -> None:
        self.fs, self.path, self.size, self.deadline, self.offset = fs, path, size, deadline, 0

    def read(self, n: int) -> bytes:
        end = self.offset + n if self.size is None else min(self.offset + n, self.size)
        if end <= self.offset:
            return b""
        chunk = self.deadline.run(self.fs, self.fs._cat_file, self.path, start=self.offset, end=end)
        self.offset += len(chunk)
        return chunk


def _check_size(uri: str, size: int, policy: KindPolicy) -> None:
    if size > policy.max_bytes:
        raise FetchError(f"{uri}: {size} bytes exceeds {policy.limit_name}={policy.max_bytes}")


def _is_denied(exc: Exception) -> bool:
    """gcsfs reports 403 as a plain OSError("Forbidden: ...") and 401 as an HttpError with code 401; Azure's
    client errors carry `status_code`."""
    code = getattr(exc, "code", None)
    status = getattr(exc, "status_code", None)
    return code in (401, 403) or status in (401, 403) or (type(exc) is OSError and str(exc).startswith("Forbidden"))


def _as_fetch_error(uri: str, exc: Exception) -> RowError:
    if isinstance(exc, RowError):
        return exc
    reason = {
        FileNotFoundError: "not found",
        PermissionError: "access denied",
        IsADirectoryError: "is a directory, not a file",
        NotADirectoryError: "a parent is not a directory",
    }.get(type(exc), type(exc).__name__)
    return FetchError(f"{uri}: {reason}")
