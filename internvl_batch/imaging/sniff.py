"""What some bytes look like, in words, for error messages that must not quote the bytes themselves.

A manifest can name any file the job may read; an error text that quoted a file's first bytes would copy them
into the output (an access key, an environment variable). `looks_like` names a kind instead: a known format
from its signature, else "text" or "binary data".
"""

from __future__ import annotations

# (offset, signature, what it is): the formats users most often give by mistake, and the job's own.
SIGNATURES = (
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"%PDF-", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (0, b"\x1f\x8b", "gzip-compressed data"),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (4, b"ftyp", "an MP4/MOV/HEIC container"),
    (8, b"WEBP", "a WebP image"),
    (8, b"AVI ", "an AVI video"),
    (0, b"PAR1", "a Parquet file"),
    (257, b"ustar", "a tar archive"),
)


def looks_like(data: bytes) -> str:
    """ "a PNG image", "HTML", "JSON or other text", "text", "binary data" or "nothing (0 bytes)": never the
    bytes."""
    if not data:
        return "nothing (0 bytes)"
    for offset, signature, kind in SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return kind
    head = bytes(data[:512])
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            return "binary data"
        text = head[: exc.start].decode("utf-8")
    if any(ch < " " and ch not in "\t\n\r\f" for ch in text):
        return "binary data"
    start = text.lstrip().lower()
    if start.startswith(("<!doctype html", "<html", "<?xml", "<svg")):
        return "HTML or XML text"
    if start.startswith(("{", "[")):
        return "JSON or other text"
    return "text"
