"""The parts of an MP4/MOV (ISO BMFF) index that PyAV does not expose: which files are ISO BMFF, where the
`moov` box is, and a track's composition offsets (`ctts`).

FFmpeg's index for a MOV stream (`stream.index_entries`) holds one entry per sample with its *decoding*
timestamp, keyframe flag, file position and size, but no presentation timestamp; a packet's pts is its dts plus
the sample's composition offset from `ctts` (plus a constant shift from the edit list). With those, the frame
table decord builds by demuxing every packet (`pyav_video.py`) is built from the index alone, so a remote file
is read only for its `moov` and the groups of pictures that are decoded.

Everything here reads box headers defensively: a malformed box gives None (the caller demuxes instead), never
an exception from arithmetic on bad sizes.
"""

from __future__ import annotations

import struct

import numpy as np

# Brands do not matter: an `ftyp` box first (MP4, MOV, 3GP, ...), or the older QuickTime files that start with
# one of these top-level boxes.
_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
MAX_MOOV_BYTES = 256 * 2**20  # a 4-hour 60 fps video's moov is ~10 MB; beyond this, demux instead


def is_iso_bmff(head: bytes) -> bool:
    """Whether the first bytes of a file are an ISO BMFF / QuickTime box header (an MP4 or MOV)."""
    return len(head) >= 8 and head[4:8] in _FIRST_BOXES


def read_moov(f, size: int) -> bytes | None:
    """The `moov` box's content, found by walking the top-level boxes of the seekable file `f` (`size` bytes);
    None if there is none, or it is larger than `MAX_MOOV_BYTES`, or a box header is malformed. Reads only the
    box headers and the moov box. The file's position is not restored (the caller does)."""
    offset = 0
    while offset + 8 <= size:
        f.seek(offset)
        header = f.read(16)
        if len(header) < 8:
            return None
        length, kind = struct.unpack(">I4s", header[:8])
        start = offset + 8
        if length == 1:  # a 64-bit size follows
            if len(header) < 16:
                return None
            length = struct.unpack(">Q", header[8:16])[0]
            start = offset + 16
        elif length == 0:  # the box runs to the end of the file
            length = size - offset
        if length < start - offset or offset + length > size:
            return None
        if kind == b"moov":
            if length > MAX_MOOV_BYTES:
                return None
            f.seek(start)
            content = f.read(offset + length - start)
            return content if len(content) == offset + length - start else None
        offset += length
    return None


def _boxes(buf: bytes, start: int, end: int):
    """(type, content start, content end) of each box in buf[start:end]; stops at a malformed header."""
    while start + 8 <= end:
        length, kind = struct.unpack_from(">I4s", buf, start)
        body = start + 8
        if length == 1:
            if start + 16 > end:
                return
            length, body = struct.unpack_from(">Q", buf, start + 8)[0], start + 16
        elif length == 0:
            length = end - start
        if length < body - start or start + length > end:
            return
        yield kind, body, start + length
        start += length


def _child(buf: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for found, body, stop in _boxes(buf, start, end):
        if found == kind:
            return body, stop
    return None


def track_offsets(moov: bytes, track_id: int, samples: int) -> np.ndarray | None:
    """The composition offset of each of the `samples` samples of the track `track_id` (the stream's `id` in
    PyAV, `tkhd`'s track ID), in decoding order, int64; zeros where the track has no `ctts` (no reordering).
    None when the track or its sample table is not found, does not add up, or has another number of samples
    (checked before anything of that size is made: the counts in a hostile file are any 32-bit number)."""
    for kind, body, stop in _boxes(moov, 0, len(moov)):
        if kind != b"trak":
            continue
        tkhd = _child(moov, body, stop, b"tkhd")
        if tkhd is None or tkhd[1] - tkhd[0] < 24:
            return None
        version = moov[tkhd[0]]
        at = tkhd[0] + (20 if version == 1 else 12)  # after version/flags and the creation/modification times
        if struct.unpack_from(">I", moov, at)[0] != track_id:
            continue
        box = (body, stop)
        for name in (b"mdia", b"minf", b"stbl"):
            box = _child(moov, *box, name)
            if box is None:
                return None
        return _sample_table(moov, *box, samples)
    return None


def _sample_table(buf: bytes, start: int, end: int, samples: int) -> np.ndarray | None:
    stsz = _child(buf, start, end, b"stsz") or _child(buf, start, end, b"stz2")
    if stsz is None or stsz[1] - stsz[0] < 12:
        return None
    count = struct.unpack_from(">I", buf, stsz[0] + 8)[0]  # version/flags, then sample size (or field size)
    if count != samples:
        return None
    ctts = _child(buf, start, end, b"ctts")
    if ctts is None:
        return np.zeros(count, np.int64)
    version = buf[ctts[0]]
    entries = struct.unpack_from(">I", buf, ctts[0] + 4)[0] if ctts[1] - ctts[0] >= 8 else -1
    if entries < 0 or ctts[0] + 8 + 8 * entries > ctts[1]:
        return None
    table = np.frombuffer(buf, ">u4", 2 * entries, ctts[0] + 8).reshape(-1, 2)
    runs = table[:, 0].astype(np.int64)
    # Version 1 offsets are signed; version 0 ones are too in practice (writers put negative ones there), as
    # FFmpeg reads them.
    offsets = table[:, 1].astype(np.uint32).view(np.int32).astype(np.int64) if version in (0, 1) else None
    if offsets is None or runs.sum() != count:
        return None
    return np.repeat(offsets, runs)
