"""Video frame sampling against the reference formula, on real H.264 MP4s whose frames show their index, with
each decoder (`video.decoder`: decord, the reference's, when installed; PyAV, which `auto` means)."""

import importlib.util
import io

import numpy as np
import pytest

from internvl_batch.imaging.video import (
    BoundError,
    VideoDecodeError,
    VideoLimitError,
    VideoSampler,
    sample_frame_indices,
)
from tests.media import encode, encode_audio_only, encode_video, make_photo, read_frame_index


def reference_get_index(bound, fps, max_frame, num_segments):
    """The model card's get_index, transcribed."""
    start, end = bound if bound else (-100000, 100000)
    start_idx = max(0, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    return [int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(num_segments)]


def test_known_values():
    # 89 / 8 = 11.125 per segment; numpy rounds 44.5 to 44 (half to even), as the reference does.
    assert sample_frame_indices(90, 30.0, 8) == [5, 16, 27, 38, 49, 61, 72, 83]
    assert sample_frame_indices(250, 25.0, 4, (2.0, 6.0)) == [62, 87, 112, 137]


@pytest.mark.parametrize("frames,fps", [(90, 30.0), (250, 25.0), (17, 29.97), (1, 24.0)])
@pytest.mark.parametrize("segments", [1, 3, 8, 32])
@pytest.mark.parametrize("bound", [None, (0.2, 0.9), (0.0, 1000.0), (-5.0, 0.5)])
def test_formula_matches_reference(frames, fps, segments, bound):
    if bound and round(bound[0] * fps) > frames - 1:
        return
    assert sample_frame_indices(frames, fps, segments, bound) == reference_get_index(bound, fps, frames - 1, segments)


VIDEOS = {"30fps-3s-gop30": (90, 30.0, 30), "25fps-10s-gop12": (250, 25.0, 12)}


def decoders() -> list:
    has_decord = importlib.util.find_spec("decord") is not None
    return [pytest.param("decord", marks=pytest.mark.skipif(not has_decord, reason="decord not installed")), "pyav"]


@pytest.fixture(params=decoders())
def decoder(request):
    return request.param


@pytest.fixture(scope="module")
def videos():
    return {name: encode_video(n, fps, gop=gop) for name, (n, fps, gop) in VIDEOS.items()}


@pytest.mark.parametrize("name", list(VIDEOS))
@pytest.mark.parametrize("segments,bound", [(8, None), (4, None), (16, (1.0, 2.5)), (32, None), (5, (0.3, 9.9))])
def test_decoded_frames_are_the_reference_frames(videos, name, segments, bound, decoder):
    frames, fps, _ = VIDEOS[name]
    sampled = VideoSampler(decoder=decoder)(videos[name], segments, bound)
    expected = reference_get_index(bound, fps, frames - 1, segments)
    assert sampled.frame_indices == expected
    assert sampled.tiles.shape == (segments, 448, 448, 3) and sampled.tiles.dtype == np.uint8
    assert [read_frame_index(tile) for tile in sampled.tiles] == expected  # the pixels really are those frames
    assert sampled.timestamps == [round(i / fps, 6) for i in expected]
    assert (sampled.total_frames, sampled.fps) == (frames, fps)


def test_frame_tile_is_the_reference_resize(videos, decoder):
    decord = pytest.importorskip("decord")  # the reference's reader gives the expected frame
    from PIL import Image

    reader = decord.VideoReader(io.BytesIO(videos["30fps-3s-gop30"]), ctx=decord.cpu(0), num_threads=1)
    expected = np.asarray(Image.fromarray(reader[16].asnumpy()).convert("RGB").resize((448, 448)))
    sampled = VideoSampler(decoder=decoder)(videos["30fps-3s-gop30"], 8)
    assert np.array_equal(sampled.tiles[1], expected)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda v: b"", "empty file"),
        (lambda v: v[: len(v) // 3], "not a readable video"),
        (lambda v: v[:48] + bytes(range(256)) * 8 + v[48 + 2048 :], "not a readable video|cannot decode frame"),
        (lambda v: encode_audio_only(), "no video stream"),
        (lambda v: b"just some text, not a video at all" * 4, "not a readable video"),
        (lambda v: encode(make_photo(64, 48), "JPEG"), "not a readable video|no video stream"),
        (lambda v: encode_video(0, 30.0), "empty file|no frames|not a readable video"),  # a video with zero frames
    ],
)
def test_bad_videos_are_row_errors(videos, make, message, decoder):
    with pytest.raises(VideoDecodeError, match=message):
        VideoSampler(decoder=decoder)(make(videos["30fps-3s-gop30"]), 8)


def test_bound_outside_the_video(videos, decoder):
    with pytest.raises(BoundError, match=r"bound \[5.0, 9.0\] s selects no frames of a 3.000 s video"):
        VideoSampler(decoder=decoder)(videos["30fps-3s-gop30"], 8, (5.0, 9.0))


def test_limits_name_the_setting(videos, decoder):
    with pytest.raises(VideoLimitError, match="duration 10.0 s exceeds video.max_duration_s=5"):
        VideoSampler(max_duration_s=5, decoder=decoder)(videos["25fps-10s-gop12"], 8)
    with pytest.raises(VideoLimitError, match="num_segments=65 exceeds video.max_segments=64"):
        VideoSampler(decoder=decoder)(videos["25fps-10s-gop12"], 65)


def test_auto_is_pyav_and_decord_is_imported_only_when_chosen():
    """`video.decoder: auto` (the default) decodes with PyAV even where decord is installed; decord is imported
    only by `decoder: decord` (checked in a fresh interpreter: other tests here load it)."""
    import subprocess
    import sys
    from pathlib import Path

    from internvl_batch.imaging.video import resolve_decoder

    assert [resolve_decoder(d) for d in ("auto", "pyav", "decord")] == ["pyav", "pyav", "decord"]
    check = (
        "import sys\n"
        "from internvl_batch.imaging.video import VideoSampler\n"
        "from internvl_batch.stages.media import MediaDecoder\n"
        "from internvl_batch.config import PreprocessConfig, VideoConfig\n"
        "from tests.media import encode_video\n"
        "sampled = MediaDecoder(PreprocessConfig(), VideoConfig(), None).video(encode_video(30, 30.0), 4)\n"
        "assert sampled.frame_indices == [3, 10, 17, 25], sampled\n"
        "assert 'decord' not in sys.modules\n"
    )
    repo = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
