"""Video rows: which frames the reference samples, decoded with PyAV (`video.decoder`: `auto` and `pyav`;
`pyav_video.py` numbers frames as decord does) or decord (the reference's decoder, only with `decoder: decord`:
nothing imports it otherwise), straight from the fetched bytes, a file, or an MP4 on an object store read in
byte ranges (`remote_video.RemoteVideo`, PyAV only).

Frame choice (the model card's `get_index`): with `fps` and `max_frame = frames - 1` from decord,
`start, end = bound or (-100000, 100000)`, `start_idx = max(0, round(start * fps))`,
`end_idx = min(round(end * fps), max_frame)`, `seg = (end_idx - start_idx) / num_segments` and frame k is
`int(start_idx + seg / 2 + round(seg * k))`. Each frame becomes one 448x448 tile (max_num 1, no thumbnail).

Both read from memory (no temporary file) or a file path. Limits protect the job: bytes are checked by the fetcher,
duration and segment count here; a video over a limit is an error row naming the limit and the value.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from internvl_batch.errors import BoundError, LimitError, RowError, VideoDecodeError, VideoLimitError  # noqa: F401 - re-exported
from internvl_batch.imaging.pyav_video import PyAVVideo
from internvl_batch.imaging.remote_video import RemoteVideo
from internvl_batch.imaging.tiles import cut_tiles
from internvl_batch.imaging.tiling import plan_tiles


def sample_frame_indices(
    num_frames: int, fps: float, num_segments: int, bound: tuple[float, float] | None = None
) -> list[int]:
    """The reference's frame indices for a video of `num_frames` frames at `fps`."""
    start, end = bound if bound else (-100000, 100000)
    max_frame = num_frames - 1
    start_idx = max(0, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    if bound and (start_idx > max_frame or end_idx < start_idx):
        raise BoundError(
            f"bound [{start}, {end}] s selects no frames of a {num_frames / fps:.3f} s video ({num_frames} frames at {fps:g} fps)"
        )
    seg_size = float(end_idx - start_idx) / num_segments
    return [int(start_idx + seg_size / 2 + np.round(seg_size * k)) for k in range(num_segments)]


@dataclass(frozen=True)
class SampledVideo:
    tiles: np.ndarray  # uint8 [num_segments, 448, 448, 3], one tile per sampled frame
    frame_indices: list[int]
    timestamps: list[float]  # seconds, frame index / fps
    total_frames: int
    fps: float
    frame_size: tuple[int, int] = (0, 0)  # (width, height) of the decoded frames

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)


class VideoSampler:
    """Decodes the sampled frames of a video and tiles them. Build once per actor."""

    def __init__(self, max_duration_s: float = 3600.0, max_segments: int = 64, decoder: str = "auto") -> None:
        self.max_duration_s = max_duration_s
        self.max_segments = max_segments
        self.decoder = resolve_decoder(decoder)

    def __call__(
        self, data: bytes | str | RemoteVideo, num_segments: int, bound: tuple[float, float] | None = None
    ) -> SampledVideo:
        """Sample from encoded bytes, a file path (large videos: the decoder then streams from disk), or an
        MP4 on an object store (PyAV reads its index and the sampled frames' byte ranges)."""
        if num_segments < 1:
            raise VideoLimitError(f"num_segments must be at least 1, got {num_segments}")
        if num_segments > self.max_segments:
            raise VideoLimitError(f"num_segments={num_segments} exceeds video.max_segments={self.max_segments}")
        reader = open_video(data, self.decoder)
        try:
            return self._sample(reader, num_segments, bound)
        finally:
            reader.close()

    def _sample(self, reader, num_segments: int, bound: tuple[float, float] | None) -> SampledVideo:
        total, fps = len(reader), float(reader.get_avg_fps())
        if total < 1:
            raise VideoDecodeError("the video has no frames")
        if not fps > 0:
            raise VideoDecodeError(f"the video reports a frame rate of {fps}")
        duration = total / fps
        if duration > self.max_duration_s:
            raise VideoLimitError(f"duration {duration:.1f} s exceeds video.max_duration_s={self.max_duration_s:g}")
        indices = sample_frame_indices(total, fps, num_segments, bound)
        tiles = np.empty((len(indices), 448, 448, 3), dtype=np.uint8)
        frame_size = (0, 0)
        for slot, frame in enumerate(reader.frames(indices)):
            image = Image.fromarray(frame).convert("RGB")
            frame_size = image.size
            tiles[slot] = cut_tiles(image, plan_tiles(image.width, image.height, 1, 1, False))[0]
        return SampledVideo(tiles, indices, [round(i / fps, 6) for i in indices], total, fps, frame_size)


def resolve_decoder(decoder: str = "auto") -> str:
    """`auto` -> `pyav` (equal or better than decord on the tests' corpus but for 10-bit conversion:
    BENCHMARKS.md); `decord` only when asked for by name."""
    return "decord" if decoder == "decord" else "pyav"


def open_video(data: bytes | str | RemoteVideo, decoder: str = "auto"):
    """A reader over in-memory bytes, a file path or a `RemoteVideo`: `len()` (frames, decord's count),
    `get_avg_fps()`, `frames(indices)` (uint8 RGB arrays, in the order asked), `close()`. One decoding thread,
    as the reference."""
    if isinstance(data, RemoteVideo):
        size = data.size
    else:
        size = os.path.getsize(data) if isinstance(data, str) else len(data)
    if not size:
        raise VideoDecodeError("empty file (0 bytes)")
    if resolve_decoder(decoder) == "decord":
        if isinstance(data, RemoteVideo):  # not made for decord (`stages/video_sources.py`); read it whole
            with data.open() as handle:
                data = handle.read()
        return DecordVideo(data, size)
    if not isinstance(data, RemoteVideo):
        return PyAVVideo(data)
    handle = data.open()
    try:
        return PyAVVideo(handle, owns_file=True)
    except BaseException:
        handle.close()
        raise


class DecordVideo:
    """decord's VideoReader behind the reader interface of `open_video`; frames read one index at a time, as
    the reference reads them (`vr[i]`)."""

    def __init__(self, data: bytes | str, size: int):
        try:
            import decord
        except ImportError:
            raise RuntimeError(
                "video.decoder: decord needs decord (pip install 'internvl-batch[decord]'), or use video.decoder: pyav"
            ) from None
        try:
            self.reader = decord.VideoReader(
                data if isinstance(data, str) else io.BytesIO(data), ctx=decord.cpu(0), num_threads=1
            )
        except Exception as exc:  # noqa: BLE001 - decord reports every open failure as RuntimeError/DECORDError
            message = _first_line(exc)
            if "cannot find video stream" in message:
                raise VideoDecodeError("no video stream (audio-only or not a video container)") from None
            raise VideoDecodeError(f"not a readable video ({size} bytes): {message}") from None

    def __len__(self) -> int:
        return len(self.reader)

    def get_avg_fps(self) -> float:
        return float(self.reader.get_avg_fps())

    def frames(self, indices: list[int]):
        for index in indices:
            try:
                yield self.reader[index].asnumpy()
            except Exception as exc:  # noqa: BLE001 - decord raises its own error types for damaged streams
                raise VideoDecodeError(f"cannot decode frame {index} of {len(self)}: {_first_line(exc)}") from None

    def close(self) -> None:
        self.reader = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    # decord prefixes messages with a timestamp and its source location; keep the readable part
    return line.split("] ", 2)[-1][:300]
