"""The frame table from an MP4's index (what ranged reads from an object store use: `pyav_video.py` given a file
object) against the table from demuxing every packet (what bytes and paths use, decord's numbering): the same
pts, keyframes, count, fps and pixels, with and without B-frames, index first or last; and the cases where the
index is not used (truncated, other containers) or the file is broken."""

import io
import struct
from pathlib import Path

import numpy as np
import pytest

from internvl_batch.imaging.mp4_index import is_iso_bmff, read_moov, track_offsets
from internvl_batch.imaging.pyav_video import PyAVVideo
from internvl_batch.imaging.video import VideoDecodeError, sample_frame_indices
from tests.unit.imaging.test_pyav_video import encode_frames


def h264(path: Path, n=60, bframes=0, gop=12, faststart=False, audio=False, w=160, h=120) -> bytes:
    """n frames of noise (every frame differs) in an MP4, its moov first with `faststart`."""
    import av

    rng = np.random.default_rng(n + bframes)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": str(bframes), "g": str(gop)}
        encode_frames(container, stream, (rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)), audio)
    return path.read_bytes()


def assert_same(data: bytes, segments: int = 8) -> PyAVVideo:
    demuxed, indexed = PyAVVideo(data), PyAVVideo(io.BytesIO(data))
    assert indexed.indexed and not demuxed.indexed
    assert (indexed.pts, indexed.key_positions) == (demuxed.pts, demuxed.key_positions)
    assert (len(indexed), indexed.get_avg_fps()) == (len(demuxed), demuxed.get_avg_fps())
    indices = sample_frame_indices(len(demuxed), demuxed.get_avg_fps(), segments)
    for a, b in zip(demuxed.frames(indices), indexed.frames(indices)):
        assert np.array_equal(a, b)
    return indexed


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"faststart": True},
        {"bframes": 3},
        {"bframes": 3, "faststart": True},
        {"bframes": 2, "gop": 5, "audio": True},
    ],
    ids=["moov-last", "faststart", "b-frames", "b-frames-faststart", "b-frames-audio"],
)
def test_the_index_gives_the_demuxed_frame_table(tmp_path, kwargs):
    data = h264(tmp_path / "v.mp4", **kwargs)
    video = assert_same(data)
    assert video.indexed
    if kwargs.get("bframes"):  # the case the index's dts alone would get wrong: pts are not in decoding order
        import av

        with av.open(io.BytesIO(data)) as container:
            packets = [p for p in container.demux(container.streams.video[0]) if p.size]
        assert any(p.pts != p.dts for p in packets)


def test_the_index_is_read_without_the_media_data(tmp_path):
    """Only the box headers, the moov and the few packets checked are read, not the frames' bytes."""
    data = h264(tmp_path / "v.mp4", n=200, gop=50)

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            chunk = super().read(n)
            Counting.read_bytes += len(chunk)
            return chunk

    video = PyAVVideo(Counting(data))
    assert video.indexed and len(video) == 200
    assert Counting.read_bytes < len(data) / 4, (Counting.read_bytes, len(data))


def test_a_truncated_mp4_with_its_index_first_is_demuxed_as_before(tmp_path):
    data = h264(tmp_path / "v.mp4", faststart=True)
    cut = data[: int(len(data) * 0.7)]
    demuxed, read = PyAVVideo(cut), PyAVVideo(io.BytesIO(cut))
    assert not read.indexed and read.pts == demuxed.pts and 20 < len(read) < 60


def test_a_truncated_mp4_with_its_index_last_is_an_error(tmp_path):
    data = h264(tmp_path / "v.mp4")
    with pytest.raises(VideoDecodeError, match="not a readable video"):
        PyAVVideo(io.BytesIO(data[: int(len(data) * 0.7)]))


def test_other_containers_are_demuxed(tmp_path):
    from tests.unit.imaging.test_pyav_video import clip

    data = clip("mjpeg", "yuvj420p", n=10, fmt="avi")
    video = PyAVVideo(io.BytesIO(data))
    assert not video.indexed and len(video) == 10


def test_the_box_reader():
    assert is_iso_bmff(b"\x00\x00\x00\x18ftypisom") and not is_iso_bmff(b"\x1aE\xdf\xa3....")
    assert read_moov(io.BytesIO(b"\x00\x00\x00\x08free" + b"\xff" * 8), 16) is None  # a box past the end
    moov = b"\x00\x00\x00\x08trak"
    assert read_moov(io.BytesIO(b"\x00\x00\x00\x10moov" + moov), 16) == moov
    assert track_offsets(b"\x00\x00\x00\x04trak", 1, 10) is None  # malformed: nothing raised


def box(kind: bytes, *content: bytes) -> bytes:
    body = b"".join(content)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def test_a_hostile_sample_count_is_refused_before_anything_of_its_size_is_made():
    """A track claiming 2**32 - 1 samples (no `ctts`, or one run of that length) would be 34 GB of offsets: the
    count must equal the index's before any array is made."""
    tkhd = box(b"tkhd", b"\x00" * 12, struct.pack(">I", 1), b"\x00" * 12)
    stsz = box(b"stsz", b"\x00" * 8, struct.pack(">I", 2**32 - 1))
    ctts = box(b"ctts", b"\x00" * 4, struct.pack(">III", 1, 2**32 - 1, 2))
    for table in (stsz, stsz + ctts):
        moov = box(b"trak", tkhd, box(b"mdia", box(b"minf", box(b"stbl", table))))
        assert track_offsets(moov, 1, 10) is None
        assert track_offsets(moov, 2, 2**32 - 1) is None  # another track: not this one
    honest = box(
        b"trak", tkhd, box(b"mdia", box(b"minf", box(b"stbl", box(b"stsz", b"\x00" * 8, struct.pack(">I", 3)))))
    )
    assert track_offsets(honest, 1, 3).tolist() == [0, 0, 0]


MP4_CASES = [
    "h264 yuv420p",
    "h264 b-frames",
    "h264 yuv444p",
    "h264 odd size",
    "h264 + audio",
    "h264 rotated 90",
    "mpeg-4 part 2",
    "h264 10-bit",
    "hevc b-frames",
]


@pytest.mark.slow  # the corpus of test_pyav_video.py (HEVC encoding), in a fresh interpreter
def test_the_index_gives_the_demuxed_frame_table_on_the_corpus(tmp_path):
    from tests.unit.imaging.test_pyav_video import encode_apart

    corpus = encode_apart(MP4_CASES + ["vfr", "faststart"], tmp_path)
    for name, data in corpus.items():
        assert assert_same(data).indexed, name
