"""Object storage: URIs, filesystems (s3:// through s3fs, gs:// through gcsfs, local paths) and the media
fetcher.

Credentials are never passed in: s3fs/botocore find them in the environment or the standard AWS chain
(env vars, profiles, instance and pod roles), gcsfs in Google's default chain (GOOGLE_APPLICATION_CREDENTIALS,
gcloud, workload identity), adlfs in Azure's (AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME
with a key, SAS or DefaultAzureCredential); `anonymous` turns signing off for public buckets.

Reads are retried with exponential backoff on transient failures (5xx, throttling, timeouts, resets) up to
`fetch.retries` times; permanent ones (missing object, access denied, a directory, too large) fail at once.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlparse

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.errors import RowError

LOCAL_SCHEMES = ("", "file")
HTTP_SCHEMES = ("http", "https")
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs")
SUPPORTED_SCHEMES = OBJECT_STORE_SCHEMES + ("file",)  # for manifests, models and output
MEDIA_SCHEMES = SUPPORTED_SCHEMES + HTTP_SCHEMES  # media may also be HTTP(S) URLs (http_media.py)


class FetchError(RowError):
    """Media could not be read (after retries, where retrying made sense)."""


class UnsupportedURIError(RowError):
    """The URI's scheme is not one the job can read."""


class MissingExtraError(UnsupportedURIError):
    """Reading this scheme needs an optional package; the message names the `pip install` to run."""


def scheme_of(uri: str) -> str:
    """The URI's scheme, lower case, as urllib.parse reads it; "" for paths. Windows drive letters are not a
    concern here; a one-letter "scheme" is still a local path. (Hand-written: called for every media URI.)"""
    colon = uri.find(":")
    if colon < 2 or not uri[0].isascii() or not uri[0].isalpha():
        return ""
    scheme = uri[:colon]
    return scheme.lower() if all(c in _SCHEME_CHARS for c in scheme) else ""


_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


def is_local(uri: str) -> bool:
    return scheme_of(uri) in LOCAL_SCHEMES


def local_path(uri: str) -> str:
    return urlparse(uri).path if scheme_of(uri) == "file" else uri


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


def gcs_filesystem(storage: StorageConfig, fetch: FetchConfig | None = None):
    """A gcsfs filesystem for these settings (one per process and settings)."""
    try:
        from gcsfs.core import GCSFileSystem  # the JSON-API client (gcsfs's default may probe gRPC per bucket)
    except ImportError:
        raise MissingExtraError("reading gs:// needs gcsfs: pip install 'internvl-batch[gcs]'") from None
    fetch = fetch or FetchConfig()
    key = ("gs", storage.gcs_endpoint_url, storage.anonymous, fetch.timeout_s)
    with _S3_LOCK:
        if key not in _S3_CACHE:
            _S3_CACHE[key] = GCSFileSystem(
                endpoint_url=storage.gcs_endpoint_url, token="anon" if storage.anonymous else None,
                requests_timeout=fetch.timeout_s, skip_instance_cache=True,
            )  # fmt: skip
        return _S3_CACHE[key]


def azure_filesystem(storage: StorageConfig, fetch: FetchConfig | None = None):
    """An adlfs filesystem (Azure Blob Storage) for these settings; the account and credentials come from the
    environment (one filesystem per process and settings)."""
    try:
        from adlfs import AzureBlobFileSystem
    except ImportError:
        raise MissingExtraError("reading az:// needs adlfs: pip install 'internvl-batch[azure]'") from None
    fetch = fetch or FetchConfig()
    key = ("az", storage.anonymous, fetch.timeout_s)
    with _S3_LOCK:
        if key not in _S3_CACHE:
            options = {"anon": True} if storage.anonymous else {}
            _S3_CACHE[key] = AzureBlobFileSystem(connection_timeout=int(fetch.timeout_s), read_timeout=int(fetch.timeout_s),
                                                 skip_instance_cache=True, **options)  # fmt: skip
        return _S3_CACHE[key]


def fsspec_filesystem(uri: str, storage: StorageConfig, fetch: FetchConfig | None = None):
    """(fsspec filesystem, path inside it) for a URI or local path."""
    scheme = scheme_of(uri)
    if scheme == "s3":
        return s3_filesystem(storage, fetch), uri.split("://", 1)[1]
    if scheme in ("gs", "gcs"):
        return gcs_filesystem(storage, fetch), uri.split("://", 1)[1]
    if scheme in ("az", "abfs"):
        return azure_filesystem(storage, fetch), uri.split("://", 1)[1]
    if scheme in LOCAL_SCHEMES:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), os.path.abspath(local_path(uri))
    raise UnsupportedURIError(f"unsupported URI scheme {scheme!r} in {uri!r} (supported: s3://, gs://, az://, local paths)")


def pyarrow_filesystem(uri: str, storage: StorageConfig):
    """(pyarrow filesystem, path) for Ray Data readers and writers."""
    import pyarrow.fs as pafs

    fs, path = fsspec_filesystem(uri, storage)
    if is_local(uri):
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FetchError, UnsupportedURIError)


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

    def __init__(self, storage: StorageConfig, fetch: FetchConfig, policies: dict[str, KindPolicy] | None = None,
                 temp_dir: str | None = None) -> None:  # fmt: skip
        self.storage = storage
        self.fetch_config = fetch
        self.policies = {"image": KindPolicy(fetch.max_bytes, "fetch.max_bytes"), **(policies or {})}
        self.temp_dir = temp_dir
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
                    raise FetchError(f"{uri}: gave up after {attempts} attempts: {type(exc).__name__}: {reason}") from None
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
            path = local_path(uri)
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
        with fs.open(path, "rb") as f:  # open() learns the size with one HEAD request
            size = getattr(f, "size", None)
            if size is not None:
                _check_size(uri, size, policy)
            if policy.spill_bytes is None or (size is not None and size <= policy.spill_bytes):
                return f.read()
            return self._spill(f, uri, policy)

    def _read_http(self, uri: str, policy: KindPolicy) -> bytes | LocalFile:
        if self._http is None:
            from internvl_batch.http_media import HttpReader

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
