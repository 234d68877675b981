"""One manifest row -> a checked `ParsedRow` (never an exception), and its media URIs made absolute.

Parsing is split from resolving so that rows already done on an earlier run cost only the parse: the id and
the fields that decide a row's tasks (`task`, `question`) come first; media paths are resolved only for rows
that will be processed.

A malformed row keeps the fields parsed before the problem and gets `error` = "manifest: ManifestError: ...".
A row whose id cannot be read is named by the caller's fallback id (`<manifest file>:<line>`), so that it
still has its one output row.
"""

from __future__ import annotations

import os
import posixpath
from typing import NamedTuple

from internvl_batch.errors import MANIFEST, ManifestError, RowError, format_row_error
from internvl_batch.filesystems import MEDIA_SCHEMES, is_local, local_path, scheme_of

RESERVED = (
    "id",
    "image",
    "images",
    "video",
    "document",
    "bound",
    "num_segments",
    "question",
    "task",
    "expression",
    "version",
)
ACCEPTED_SCHEMES = ("",) + MEDIA_SCHEMES


class ParsedRow(NamedTuple):
    """A checked manifest row. Immutable: a later stage that finds a problem makes a new row
    (`row._replace(error=...)`); a tuple, because the scan builds one per manifest row (cheaper than a frozen
    dataclass)."""

    id: str | None
    question: str | None = None
    task: str | None = None
    expression: str | None = None
    media_kind: str = "image"  # image | images | video | document (a PDF: one output row per page)
    media: tuple[str, ...] = ()  # as written in the manifest (stripped); "" or a name if embedded
    media_data: tuple[bytes | None, ...] | None = None  # images held in the manifest itself (Parquet bytes)
    bound: tuple[float, float] | None = None  # [start_s, end_s] of a video
    num_segments: int | None = None
    error: str | None = None
    version: str | None = None  # what identifies the media's bytes (`version` column; a media root's listing)


def parse_row(raw: dict | Exception, fallback_id: str | None) -> ParsedRow:
    """Check one raw row. `fallback_id` names rows whose id is missing or unreadable; None means ids are
    optional (the Python API on a user's dataset), and such rows keep a null id."""
    # The common row (a text id, one image URI, text or no question/task/expression) is recognised in a few
    # lookups: the scan pays this for every row of the manifests. Anything else takes the full checks,
    # which give the same result for the common row (tests/unit/manifest/test_rows.py compares them).
    if type(raw) is dict:
        get = raw.get
        rid, image, question, task, expression = (
            get("id"),
            get("image"),
            get("question"),
            get("task"),
            get("expression"),
        )
        if (
            type(rid) is str
            and type(image) is str
            and (question is None or type(question) is str)
            and (task is None or type(task) is str)
            and (expression is None or type(expression) is str)
            and get("images") is None
            and get("video") is None
            and get("document") is None
            and get("bound") is None
            and get("num_segments") is None
            and type(version := get("version")) in (str, type(None))
        ):
            uri = image.strip()
            if uri and rid.strip() and (":" not in uri or scheme_of(uri) in ACCEPTED_SCHEMES):
                return ParsedRow(rid, question, task, expression, "image", (uri,), version=version)
    return checked_row(raw, fallback_id)


def checked_row(raw: dict | Exception, fallback_id: str | None) -> ParsedRow:
    """`parse_row` without its fast path: every check, in order. A row that fails one keeps the fields read
    before it."""
    fields: dict = {"id": fallback_id}
    try:
        if isinstance(raw, Exception):
            fields["id"] = getattr(raw, "row_id", None) or fallback_id  # the reader could read the id
            raise raw
        fields["id"] = _id_of(raw, fallback_id)
        fields["question"] = _text(raw, "question")
        fields["task"] = _text(raw, "task")
        fields["expression"] = _text(raw, "expression")
        version = raw.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, (str, int))):
            raise ManifestError(f"`version` must be text or an integer, got {type(version).__name__}")
        fields["version"] = None if version is None else str(version)
        kind, media, data = _media_of(raw)
        fields.update(media_kind=kind, media=media, media_data=data)
        fields["bound"], fields["num_segments"] = _video_options(raw, kind)
        for k, uri in enumerate(media):
            if (data is None or data[k] is None) and scheme_of(uri) not in ACCEPTED_SCHEMES:
                raise ManifestError(
                    f"unsupported URI scheme {scheme_of(uri)!r} in {uri!r} "
                    "(supported: s3://, gs://, az://, http(s)://, local paths)"
                )
    except RowError as exc:
        fields["error"] = format_row_error(MANIFEST, exc)
    return ParsedRow(**fields)


class MediaResolver:
    """Relative media paths -> absolute URIs, relative to the manifest's own location (or a base URI)."""

    def __init__(self, base_uri: str | None) -> None:
        self.base_uri = base_uri
        self.local_dir = None
        if base_uri is not None and is_local(base_uri):
            self.local_dir = os.path.dirname(os.path.abspath(local_path(base_uri)))

    def __call__(self, uri: str) -> str:
        if scheme_of(uri) or os.path.isabs(uri):
            return uri
        if self.base_uri is None:
            raise ManifestError(
                f"relative media path {uri!r} without a manifest to resolve it against; use absolute URIs"
            )
        if self.local_dir is not None:
            return os.path.normpath(os.path.join(self.local_dir, uri))
        scheme, rest = self.base_uri.rsplit("/", 1)[0].split("://", 1)
        bucket, _, prefix = rest.partition("/")
        return f"{scheme}://{bucket}/" + posixpath.normpath(posixpath.join(prefix, uri)).lstrip("/")


def resolve_relative(uri: str, manifest_uri: str) -> str:
    """A manifest entry as an absolute URI: relative paths are relative to the manifest's own location."""
    return MediaResolver(manifest_uri)(uri)


def _id_of(raw: dict, fallback: str | None) -> str | None:
    value = raw.get("id")
    if value is None and fallback is None:
        return None
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise ManifestError("missing `id`")
    if not isinstance(value, (str, int)):
        raise ManifestError(f"`id` must be a string, got {type(value).__name__}")
    return str(value)


def _text(raw: dict, key: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ManifestError(f"`{key}` must be text, got {type(value).__name__}")


def _media_of(raw: dict) -> tuple[str, tuple[str, ...], tuple[bytes | None, ...] | None]:
    """(kind, URIs or names, the embedded images' bytes per entry or None when every entry is a URI)."""
    given = [(k, raw.get(k)) for k in ("image", "images", "video", "document") if raw.get(k) is not None]
    if len(given) != 1:
        if given:
            raise ManifestError(f"row has {' and '.join(f'`{k}`' for k, _ in given)}; use one")
        raise ManifestError("row has none of `image`, `images`, `video`, `document`")
    kind, value = given[0]
    if isinstance(value, Exception):
        raise value
    if kind == "images":
        if not isinstance(value, list) or not value:
            raise ManifestError("`images` must be a non-empty list of URIs or images")
        entries = [_media_entry(v, "images") for v in value]
    elif kind in ("image", "document"):  # a document: a PDF's URI, or its bytes held in the manifest
        entries = [_media_entry(value, kind)]
    else:
        if not isinstance(value, str) or not value.strip():
            raise ManifestError("`video` must be one non-empty URI")
        entries = [(value.strip(), None)]
    data = tuple(d for _, d in entries)
    return kind, tuple(u for u, _ in entries), data if any(d is not None for d in data) else None


def _media_entry(value, column: str) -> tuple[str, bytes | None]:
    """One image: a URI, encoded bytes, or a Hugging Face datasets `Image` struct ({bytes, path}: the bytes when
    present, else the path as a URI). -> (URI or the embedded image's name, bytes or None)."""
    if isinstance(value, str) and value.strip():
        return value.strip(), None
    if isinstance(value, (bytes, bytearray)) and value:
        return "", bytes(value)
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        data, path = value.get("bytes"), value.get("path")
        if isinstance(data, (bytes, bytearray)) and data:
            return (path if isinstance(path, str) else ""), bytes(data)
        if isinstance(path, str) and path.strip():
            return path.strip(), None
        raise ManifestError(f"`{column}` holds an image struct with neither bytes nor a path")
    raise ManifestError(f"`{column}` must be a non-empty URI or an image (bytes, or a {{bytes, path}} struct)")


def _video_options(raw: dict, kind: str) -> tuple[tuple[float, float] | None, int | None]:
    bound, segments = raw.get("bound"), raw.get("num_segments")
    if kind != "video":
        if bound is not None or segments is not None:
            raise ManifestError("`bound` and `num_segments` apply to `video` rows only")
        return None, None
    if isinstance(bound, Exception):
        raise bound
    if bound is not None:
        ok = (
            isinstance(bound, list)
            and len(bound) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bound)
        )
        if not ok or not bound[0] < bound[1]:
            raise ManifestError(f"`bound` must be [start_s, end_s] with start < end, got {bound!r}")
        bound = (float(bound[0]), float(bound[1]))
    if segments is not None and (isinstance(segments, bool) or not isinstance(segments, int) or segments < 1):
        raise ManifestError(f"`num_segments` must be a positive integer, got {segments!r}")
    return bound, segments
