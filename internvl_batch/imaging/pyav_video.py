"""Video frames with PyAV (FFmpeg inside its wheels: Linux x86_64/aarch64, macOS), numbered as decord numbers
them, so that the reference's frame choice (`video.sample_frame_indices`) picks the same frames.

decord's numbering (its VideoReader, read in its source): on opening it reads every packet of the best video
stream (`av_find_best_stream`), and frame i is the packet with the i-th smallest pts; its frame count is the
number of those packets, its fps the stream's `avg_frame_rate`. Frames are converted to RGB24 by an FFmpeg
filter graph (`scale` to the frame's size, bicubic; transposes first for 90/180/270 degree rotation metadata:
the picture turned counter-clockwise by the display matrix's angle, as here).

Here: the packets are indexed the same way (demuxed, not decoded: pts and keyframe flags), and each sampled
frame is decoded by seeking to the last keyframe at or before it and decoding forward to its pts, so only what
is sampled (and the frames between a keyframe and it) is decoded.

A file object that is an MP4/MOV (a `remote_video.ObjectFile`: ranged reads from an object store) is indexed
without demuxing, which would read the whole file: FFmpeg's index of the stream (`stream.index_entries`, one
entry per packet, in the order the packets are demuxed: dts, keyframe flag, position) plus each sample's
composition offset from the `ctts` box (`mp4_index.py`) gives every packet's pts. The constant shift FFmpeg adds
(edit lists) is taken from the first packets, demuxed; if they disagree with the index, if the sample counts
differ (edit lists that drop samples, fragmented MP4) or if the index points past the end of the file
(truncated), the packets are demuxed as for any other source. So the numbering is decord's either way.
"""

from __future__ import annotations

import io
from bisect import bisect_right
from collections.abc import Iterator

import numpy as np

from internvl_batch.errors import VideoDecodeError
from internvl_batch.imaging.mp4_index import read_moov, track_offsets

CHECKED_PACKETS = 4  # packets demuxed to confirm the index's pts (a few tens of KB to a few MB: one keyframe)


class PyAVVideo:
    """A video opened with PyAV, indexed as decord indexes it. `len()`, `get_avg_fps()`, `frames(indices)`."""

    def __init__(self, data, owns_file: bool = False):
        """`data`: encoded bytes, a file path, or a seekable binary file object (read in place; `close()`
        closes it with `owns_file`)."""
        import av

        self._av = av
        self.owned = data if owns_file else None
        source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        try:
            self.container = av.open(source, mode="r")
        except Exception as exc:  # noqa: BLE001 - FFmpeg's errors for unreadable input vary by container
            raise VideoDecodeError(f"not a readable video: {_first_line(exc)}") from None
        demuxer = self.container.format.name
        if demuxer == "image2" or demuxer.endswith("_pipe"):  # FFmpeg reads a still image as a one-frame video
            self.container.close()
            raise VideoDecodeError(f"not a readable video: an image ({demuxer.removesuffix('_pipe')})")
        try:
            self.stream = self.container.streams.best("video")
        except Exception:  # noqa: BLE001
            self.stream = None
        if self.stream is None:
            self.container.close()
            raise VideoDecodeError("no video stream (audio-only or not a video container)")
        self.stream.thread_type = "NONE"  # one decoding thread, as the reference's decord reader
        self.indexed = False  # whether the frame table came from the MP4 index (no full demux)
        table = None
        if source is data and not isinstance(data, str) and demuxer.startswith("mov,"):  # a file object given
            table = self._from_index(source)
        pts, keys = table or self._demuxed()
        order = np.argsort(np.asarray(pts, np.int64), kind="stable")
        self.pts = [pts[k] for k in order]
        self.position = {p: i for i, p in enumerate(self.pts)}  # pts -> frame number (decord's)
        self.key_positions = [i for i, k in enumerate(order) if keys[k]]
        rate = self.stream.average_rate
        self.fps = float(rate) if rate else 0.0

    def _demuxed(self) -> tuple[list[int], list[bool]]:
        """Every packet's pts and keyframe flag, in demuxing order, by demuxing them all."""
        pts, keys = [], []
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0 and packet.pts is None:  # the demuxer's end-of-stream marker
                    continue
                pts.append(packet.pts if packet.pts is not None else -(2**63))
                keys.append(bool(packet.is_keyframe))
        except Exception as exc:  # noqa: BLE001 - a damaged container stops the index where it breaks
            if not pts:
                self.container.close()
                raise VideoDecodeError(f"not a readable video: {_first_line(exc)}") from None
        return pts, keys

    def _from_index(self, source) -> tuple[list[int], list[bool]] | None:
        """Every packet's pts and keyframe flag from the MP4 index (see the module docstring); None where the
        index cannot give them. Leaves the container where it was opened: at its first packet."""
        entries = self.stream.index_entries
        count = len(entries)
        if not count:
            return None
        at = source.tell()
        try:
            size = getattr(source, "size", None) or source.seek(0, io.SEEK_END)
            moov = read_moov(source, size)
        finally:
            source.seek(at)  # FFmpeg's reader expects the file where it left it
        offsets = track_offsets(moov, self.stream.id, count) if moov else None
        if offsets is None:
            return None
        rows = [(e.timestamp, e.is_keyframe, e.pos + e.size) for e in entries]
        if max(end for _, _, end in rows) > size:
            return None  # truncated: demuxing finds the packets that are there, as decord does
        dts = np.fromiter((t for t, _, _ in rows), np.int64, count)
        checked = []
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0 and packet.pts is None:
                    continue
                checked.append((packet.dts, packet.pts))
                if len(checked) == min(CHECKED_PACKETS, count):
                    break
        except self._av.FFmpegError:
            checked = []
        pts = None
        if checked and all(d is not None and p is not None for d, p in checked):
            pts = dts + offsets + (checked[0][1] - int(dts[0]) - int(offsets[0]))  # FFmpeg's shift
            if any(d != dts[k] or p != pts[k] for k, (d, p) in enumerate(checked)):
                pts = None
        if pts is None:  # the index and the packets disagree: demux from the start, in a fresh container
            self.container.close()
            source.seek(0)
            self.container = self._av.open(source, mode="r")
            self.stream = self.container.streams.best("video")
            self.stream.thread_type = "NONE"
            return None
        self.indexed = True
        return pts.tolist(), [k for _, k, _ in rows]

    def __len__(self) -> int:
        return len(self.pts)

    def get_avg_fps(self) -> float:
        return self.fps

    def close(self) -> None:
        self.container.close()
        if self.owned is not None:
            self.owned.close()

    def frames(self, indices: list[int]) -> Iterator[np.ndarray]:
        """The frames at `indices` (decord's numbering), as uint8 RGB arrays [height, width, 3], in that order.
        Indices in ascending order (the reference's sampling) are given as each is decoded, so that one frame
        is held at a time (64 frames of 4K are 1.6 GB); others are decoded first, then given in their order."""
        indices = list(indices)
        if indices == sorted(indices):
            previous, frame = None, None
            decoded = self._decode(sorted(set(indices)))
            for index in indices:
                if index != previous:
                    _, frame = next(decoded)
                    previous = index
                yield frame
            return
        decoded = dict(self._decode(sorted(set(indices))))
        for index in indices:
            yield decoded[index]

    def _decode(self, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) for each of `wanted` (ascending, distinct), in that order.

        Decoding goes on from where it is while the next frame is ahead with no keyframe between; otherwise it
        seeks to the last keyframe at or before that frame. So a clip with few keyframes is decoded once,
        forward, and a long one with many mostly skipped."""
        positions = {self.pts[i]: i for i in wanted}  # pts -> frame number, for the frames asked for
        stream, at, index = None, -1, -1  # the decoded frames' iterator; the frame number decoded last
        try:
            for index in wanted:
                where = bisect_right(self.key_positions, index) - 1
                key = self.key_positions[where] if where >= 0 else 0
                if stream is None or index <= at or key > at:
                    self.container.seek(self.pts[key], stream=self.stream, backward=True, any_frame=False)
                    stream = self._decoded()
                found = None
                for pts, frame in stream:
                    if positions.get(pts) == index:
                        found = self._rgb(frame)
                    at = self.position.get(pts, at)
                    if at >= index:
                        break
                if found is None:
                    raise VideoDecodeError(f"cannot decode frame {index} of {len(self)}: the stream ends before it")
                yield index, found
        except self._av.FFmpegError as exc:
            raise VideoDecodeError(f"cannot decode frame {index} of {len(self)}: {_first_line(exc)}") from None

    def _decoded(self) -> Iterator[tuple[int, object]]:
        """(pts, frame) of every frame decoded from the current position of the container."""
        for packet in self.container.demux(self.stream):
            for frame in packet.decode():
                if frame.pts is not None:
                    yield frame.pts, frame

    def _rgb(self, frame) -> np.ndarray:
        rgb = frame.reformat(format="rgb24", interpolation="BICUBIC").to_ndarray()
        # The display matrix's rotation, counter-clockwise degrees (PyAV's sign), applied as decord applies it.
        turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
