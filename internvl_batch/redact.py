"""Credentials out of every URI the job writes or logs.

Manifests and configs may hold URIs that carry secrets: presigned object-store URLs (`X-Amz-Signature`,
`X-Amz-Credential`, `X-Goog-Signature`, Azure SAS `sig=`), tokens in query strings, and `user:password@`
userinfo (an S3-compatible `storage.endpoint_url`, an HTTP server). The job keeps the full URI in memory for
the fetch only; whatever it writes (the output's `media` and `error` columns, `.internvl-batch/summary.json`
and `runs/*.json`, the report) or logs goes through `redact_text`, which keeps the URI's path (so users can still tell which
object a row is about) and replaces secret query values and userinfo with `REDACTED`.

Which query parameters are secret is decided by name, generously: any parameter whose name contains one of
`SECRET_NAME_PARTS` (case-insensitive). Redacting a harmless parameter costs a little readability; missing a
secret one leaks a credential.

The same two patterns are applied by Python's `re` (text) and by Arrow's RE2 (`redact_column`, whole columns
without a Python loop); both engines read them alike.
"""

from __future__ import annotations

import re

REDACTED = "REDACTED"

# Parts of query parameter names that hold secrets: X-Amz-Signature / X-Amz-Credential / X-Amz-Security-Token
# (S3 presigned URLs), X-Goog-Signature / X-Goog-Credential (GCS), sig (Azure SAS), Signature / Policy /
# Key-Pair-Id (CloudFront), AWSAccessKeyId (S3 v2), token / access_token / api_key / key / password / secret.
SECRET_NAME_PARTS = ("sig", "token", "credential", "secret", "password", "passwd", "pwd", "key", "auth", "policy")

_NAME = "[A-Za-z0-9_.~%-]*(?:" + "|".join(SECRET_NAME_PARTS) + ")[A-Za-z0-9_.~%-]*"
# A secret query parameter wherever it appears (a full URL, or a path and query quoted in a client's error). The
# value ends at the next parameter, fragment, blank or quote; a colon belongs to it unless a blank follows
# (`...&sig=abc: HTTP 404`, where the fetcher's message goes on).
QUERY_PATTERN = r"(?i)([?&;]" + _NAME + r"=)(?:[^&;#:\s'\"<>]|:[^&;#\s'\"<>])*"
# Userinfo of any scheme://user[:password]@host (the authority ends at the first / ? # or blank).
USERINFO_PATTERN = r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s'\"<>]*@"

_QUERY = re.compile(QUERY_PATTERN)
_USERINFO = re.compile(USERINFO_PATTERN)


def redact_text(text: str) -> str:
    """`text` with every secret query value and every URI's userinfo replaced by `REDACTED`."""
    if not isinstance(text, str) or ("=" not in text and "@" not in text):
        return text
    if "=" in text:
        text = _QUERY.sub(r"\1" + REDACTED, text)
    if "@" in text:
        text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    return text


def redact_value(value):
    """Every string inside a JSON-like value (dicts, lists, tuples) redacted; other values unchanged."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(item) for item in value)
    return value


def redact_column(array):
    """A pyarrow string or list<string> array (or chunked array) with `redact_text` applied to every value,
    by Arrow compute (RE2)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        return pa.chunked_array([redact_column(chunk) for chunk in array.chunks], type=array.type)
    if pa.types.is_list(array.type):
        import numpy as np

        lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())
        values = redact_column(array.flatten())
        return pa.ListArray.from_arrays(offsets, values, type=array.type, mask=array.is_null())
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)) or not len(array):
        return array
    maybe = pc.or_(pc.match_substring(array, "="), pc.match_substring(array, "@"))
    if not pc.any(maybe).as_py():  # plain URIs and messages (the usual case): nothing to rewrite
        return array
    array = pc.replace_substring_regex(array, QUERY_PATTERN, r"\1" + REDACTED)
    return pc.replace_substring_regex(array, USERINFO_PATTERN, r"\1" + REDACTED + "@")


class RedactingFilter:
    """A logging filter for handlers: each record's message (its arguments filled in) and traceback text
    redacted. Added to the driver's handlers by the command-line entry points (`install_log_redaction`)."""

    def filter(self, record) -> bool:
        import logging

        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact_text(message), ()
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def install_log_redaction() -> None:
    """Redact every record the root logger's handlers write (call after `logging.basicConfig`)."""
    import logging

    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
