"""Object storage: URIs, filesystems (s3:// through s3fs, local paths) and the media fetcher.

Credentials are never passed in: s3fs/botocore find them in the environment or the standard AWS chain
(env vars, profiles, instance and pod roles); `anonymous` turns signing off for public buckets.

Reads are retried with exponential backoff on transient failures (5xx, throttling, timeouts, resets) up to
`fetch.retries` times; permanent ones (missing object, access denied, a directory, too large) fail at once.
"""

from __future__ import annotations

import os
import posixpath
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.errors import RowError

LOCAL_SCHEMES = ("", "file")
SUPPORTED_SCHEMES = ("s3", "file")


class FetchError(RowError):
    """Media could not be read (after retries, where retrying made sense)."""


class UnsupportedURIError(RowError):
    """The URI's scheme is not one the job can read."""


def scheme_of(uri: str) -> str:
    # Windows drive letters are not a concern here; a one-letter "scheme" would still be a local path.
    parsed = urlparse(uri)
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else ""


def is_local(uri: str) -> bool:
    return scheme_of(uri) in LOCAL_SCHEMES


def local_path(uri: str) -> str:
    return urlparse(uri).path if scheme_of(uri) == "file" else uri


def resolve_relative(uri: str, manifest_uri: str) -> str:
    """A manifest entry as an absolute URI: relative paths are relative to the manifest's own location."""
    if scheme_of(uri) or os.path.isabs(uri):
        return uri
    if is_local(manifest_uri):
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(local_path(manifest_uri))), uri))
    base = manifest_uri.rsplit("/", 1)[0]
    scheme, rest = base.split("://", 1)
    bucket, _, prefix = rest.partition("/")
    return f"{scheme}://{bucket}/" + posixpath.normpath(posixpath.join(prefix, uri)).lstrip("/")


_S3_CACHE: dict = {}
_S3_LOCK = threading.Lock()


def s3_filesystem(storage: StorageConfig, fetch: FetchConfig | None = None):
    """An s3fs filesystem for these settings (one per process and settings)."""
    try:
        import s3fs
    except ImportError:
        raise RuntimeError("reading s3:// needs s3fs: pip install s3fs") from None
    fetch = fetch or FetchConfig()
    key = (storage.endpoint_url, storage.anonymous, storage.region, fetch.timeout_s)
    with _S3_LOCK:
        if key not in _S3_CACHE:
            client_kwargs = {"region_name": storage.region} if storage.region else {}
            if storage.endpoint_url:
                client_kwargs["endpoint_url"] = storage.endpoint_url
            fs = s3fs.S3FileSystem(
                anon=storage.anonymous,
                client_kwargs=client_kwargs,
                # Our own bounded retry loop decides; single attempts below it keep the bound honest.
                config_kwargs={
                    "connect_timeout": fetch.timeout_s,
                    "read_timeout": fetch.timeout_s,
                    "retries": {"max_attempts": 1, "mode": "standard"},
                },
                skip_instance_cache=True,
            )
            fs.retries = 1  # s3fs's own retry loop (a class attribute, not a constructor argument)
            _S3_CACHE[key] = fs
        return _S3_CACHE[key]


def fsspec_filesystem(uri: str, storage: StorageConfig, fetch: FetchConfig | None = None):
    """(fsspec filesystem, path inside it) for a URI or local path."""
    scheme = scheme_of(uri)
    if scheme == "s3":
        return s3_filesystem(storage, fetch), uri.split("://", 1)[1]
    if scheme in LOCAL_SCHEMES:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), os.path.abspath(local_path(uri))
    raise UnsupportedURIError(f"unsupported URI scheme {scheme!r} in {uri!r} (supported: s3://, local paths)")


def pyarrow_filesystem(uri: str, storage: StorageConfig):
    """(pyarrow filesystem, path) for Ray Data readers and writers."""
    import pyarrow.fs as pafs

    fs, path = fsspec_filesystem(uri, storage)
    if is_local(uri):
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FetchError, UnsupportedURIError)


class MediaFetcher:
    """Reads media bytes by URI, many at a time, with bounded retries. Build once per actor."""

    def __init__(self, storage: StorageConfig, fetch: FetchConfig) -> None:
        self.storage = storage
        self.fetch_config = fetch
        self._pool = ThreadPoolExecutor(max_workers=fetch.threads, thread_name_prefix="fetch")

    def fetch(self, uri: str) -> bytes:
        attempts = self.fetch_config.retries + 1
        delay = self.fetch_config.backoff_s
        for attempt in range(1, attempts + 1):
            try:
                return self._read(uri)
            except _PERMANENT as exc:
                raise _as_fetch_error(uri, exc) from None
            except Exception as exc:  # noqa: BLE001 - transient until proven otherwise
                if attempt == attempts:
                    raise FetchError(f"{uri}: gave up after {attempts} attempts: {type(exc).__name__}: {exc}") from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def fetch_many(self, uris: list[str]) -> list[bytes | Exception]:
        """Bytes or the exception, per URI, in order."""

        def one(uri: str) -> bytes | Exception:
            try:
                return self.fetch(uri)
            except Exception as exc:  # noqa: BLE001 - returned as a value for the row
                return exc

        return list(self._pool.map(one, uris))

    def _read(self, uri: str) -> bytes:
        limit = self.fetch_config.max_bytes
        if is_local(uri):
            path = local_path(uri)
            if os.path.isdir(path):
                raise IsADirectoryError(f"{path} is a directory")
            size = os.path.getsize(path)
            if size > limit:
                raise FetchError(f"{uri}: {size} bytes exceeds fetch.max_bytes={limit}")
            with open(path, "rb") as f:
                return f.read()
        fs, path = fsspec_filesystem(uri, self.storage, self.fetch_config)
        with fs.open(path, "rb") as f:  # open() learns the size with one HEAD request
            size = getattr(f, "size", None)
            if size is not None and size > limit:
                raise FetchError(f"{uri}: {size} bytes exceeds fetch.max_bytes={limit}")
            return f.read()


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
