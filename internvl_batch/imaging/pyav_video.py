"""Video frames with PyAV (FFmpeg inside its wheels: Linux x86_64/aarch64, macOS), numbered as decord numbers
them, so that the reference's frame choice (`video.sample_frame_indices`) picks the same frames.

decord's numbering (its VideoReader, read in its source): on opening it reads every packet of the best video
stream (`av_find_best_stream`), and frame i is the packet with the i-th smallest pts; its frame count is the
number of those packets, its fps the stream's `avg_frame_rate`. Frames are converted to RGB24 by an FFmpeg
filter graph (`scale` to the frame's size, bicubic; transposes first for 90/180/270 degree rotation metadata).

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
        """The frames at `indices` (decord's numbering), as uint8 RGB arrays [height, width, 3], in that order."""
        wanted = set(indices)
        positions = {self.pts[i]: i for i in wanted}  # pts -> frame number, for the frames asked for
        decoded: dict[int, np.ndarray] = {}
        for index in sorted(wanted):
            if index not in decoded:
                decoded.update(self._decode_to(index, positions))
        for index in indices:
            yield decoded[index]

    def _decode_to(self, index: int, positions: dict[int, int]) -> dict[int, np.ndarray]:
        """Seek to the keyframe at or before frame `index`, decode forward to it; the wanted frames met."""
        target = self.pts[index]
        where = bisect_right(self.key_positions, index) - 1
        start = self.pts[self.key_positions[where]] if where >= 0 else self.pts[0]
        self.container.seek(start, stream=self.stream, backward=True, any_frame=False)
        try:
            return self._decode_forward(index, target, positions)
        except self._av.FFmpegError as exc:
            raise VideoDecodeError(f"cannot decode frame {index} of {len(self)}: {_first_line(exc)}") from None

    def _decode_forward(self, index: int, target: int, positions: dict[int, int]) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        for packet in self.container.demux(self.stream):
            for frame in packet.decode():
                if frame.pts in positions:
                    found[positions[frame.pts]] = self._rgb(frame)
                if frame.pts is not None and frame.pts >= target:
                    if index not in found:
                        raise VideoDecodeError(f"frame {index} (pts {target}) was not decoded")
                    return found
        if index not in found:
            raise VideoDecodeError(f"cannot decode frame {index} of {len(self)}: the stream ends before it")
        return found

    def _rgb(self, frame) -> np.ndarray:
        rgb = frame.reformat(format="rgb24", interpolation="BICUBIC").to_ndarray()
        turns = {90: 3, 180: 2, 270: 1, -90: 1, -180: 2, -270: 3}.get(int(getattr(frame, "rotation", 0) or 0), 0)
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
