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
"""

from __future__ import annotations

import io
from bisect import bisect_right
from collections.abc import Iterator

import numpy as np

from internvl_batch.errors import VideoDecodeError


class PyAVVideo:
    """A video opened with PyAV, indexed as decord indexes it. `len()`, `get_avg_fps()`, `frames(indices)`."""

    def __init__(self, data: bytes | str):
        import av

        self._av = av
        try:
            self.container = av.open(data if isinstance(data, str) else io.BytesIO(data), mode="r")
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
        order = np.argsort(np.asarray(pts, np.int64), kind="stable")
        self.pts = [pts[k] for k in order]
        self.position = {p: i for i, p in enumerate(self.pts)}  # pts -> frame number (decord's)
        self.key_positions = [i for i, k in enumerate(order) if keys[k]]
        rate = self.stream.average_rate
        self.fps = float(rate) if rate else 0.0

    def __len__(self) -> int:
        return len(self.pts)

    def get_avg_fps(self) -> float:
        return self.fps

    def close(self) -> None:
        self.container.close()

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
