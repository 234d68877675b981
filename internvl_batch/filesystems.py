"""URIs and filesystems: which schemes the job reads, and an fsspec (or pyarrow) filesystem for each.

- `s3://` through s3fs, `gs://` through gcsfs (the `gcs` extra), `az://` / `abfs://` through adlfs (the `azure`
  extra), local paths and `file://`; media may also be `http(s)://` URLs (`http_media.py`).
- Credentials are never passed in: s3fs/botocore find them in the environment or the standard AWS chain (env
  vars, profiles, instance and pod roles), gcsfs in Google's default chain (GOOGLE_APPLICATION_CREDENTIALS,
  gcloud, workload identity), adlfs in Azure's (AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME
  with a key, SAS or DefaultAzureCredential); `anonymous` turns signing off for public buckets.
- Filesystems are made once per process and settings; clients' own retries are kept to one attempt where
  they allow it, so that the fetcher's bounded retry loop (`storage.py`) decides.
"""

from __future__ import annotations

import os
import threading
from urllib.parse import urlparse

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.errors import MissingExtraError, UnsupportedURIError

LOCAL_SCHEMES = ("", "file")
HTTP_SCHEMES = ("http", "https")
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs")
SUPPORTED_SCHEMES = OBJECT_STORE_SCHEMES + ("file",)  # for manifests, models and output
MEDIA_SCHEMES = SUPPORTED_SCHEMES + HTTP_SCHEMES  # media may also be HTTP(S) URLs (http_media.py)


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
                endpoint_url=storage.gcs_endpoint_url,
                token="anon" if storage.anonymous else None,
                requests_timeout=fetch.timeout_s,
                skip_instance_cache=True,
            )
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
            _S3_CACHE[key] = AzureBlobFileSystem(
                connection_timeout=int(fetch.timeout_s),
                read_timeout=int(fetch.timeout_s),
                skip_instance_cache=True,
                **options,
            )
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
    raise UnsupportedURIError(
        f"unsupported URI scheme {scheme!r} in {uri!r} (supported: s3://, gs://, az://, local paths)"
    )


def object_version(info: dict) -> str | None:
    """What identifies an object's bytes in a listing entry: ETag (S3, Azure), VersionId (versioned S3),
    generation (GCS); None when the store gives none."""
    etag, version = info.get("ETag") or info.get("etag"), info.get("VersionId") or info.get("version_id")
    parts = [f"etag={str(etag).strip(chr(34))}"] if etag else []
    parts += [f"version={version}"] if version else []
    parts += [f"generation={info['generation']}"] if info.get("generation") else []
    return " ".join(parts) or None
