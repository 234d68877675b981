"""Videos on a real S3 endpoint (moto) read in byte ranges (`video.ranged_reads`): an MP4 with its index first or
last gives the frames of the downloaded file, pixel for pixel, after fetching a fraction of the object; other
containers are downloaded; a truncated MP4 is an error row; the size limit is checked before any read; and the
isolated decoder's child opens the object itself. Fast: it runs with `-m "not slow"`."""

import numpy as np
import pytest

from internvl_batch.config import FetchConfig, StorageConfig, VideoConfig
from internvl_batch.errors import FetchError, VideoDecodeError
from internvl_batch.imaging.remote_video import RemoteVideo
from internvl_batch.imaging.video import VideoSampler, open_video
from internvl_batch.stages.video_sources import VideoSources
from internvl_batch.storage import KindPolicy, MediaFetcher
from tests.unit.imaging.test_ranged_video import h264

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def videos(s3, s3_endpoint, tmp_path_factory):
    """(VideoSources, base URI, {name: bytes}) with each video uploaded under base/name (once: encoding ~2 s)."""
    import secrets

    from tests.unit.imaging.test_pyav_video import clip

    tmp_path, bucket = tmp_path_factory.mktemp("ranged"), "ranged-" + secrets.token_hex(4)
    s3.mkdir(bucket)

    made = {
        "last.mp4": h264(tmp_path / "a.mp4", n=400, gop=25, bframes=2, w=320, h=240),
        "first.mp4": h264(tmp_path / "b.mp4", n=400, gop=25, bframes=2, faststart=True, w=320, h=240),
        "clip.avi": clip("mjpeg", "yuvj420p", n=10, fmt="avi"),
    }
    made["cut.mp4"] = made["last.mp4"][: len(made["last.mp4"]) * 2 // 3]
    for name, data in made.items():
        s3.pipe(f"{bucket}/v/{name}", data)
    storage, fetch, video = StorageConfig(endpoint_url=s3_endpoint), FetchConfig(), VideoConfig(max_bytes=2**30)
    fetcher = MediaFetcher(storage, fetch, {"video": KindPolicy(video.max_bytes, "video.max_bytes", 2**30)})
    yield VideoSources(fetcher, storage, fetch, video), f"s3://{bucket}/v", made


@pytest.mark.parametrize("name", ["last.mp4", "first.mp4"])
def test_an_mp4_is_read_in_ranges_and_gives_the_downloaded_frames(videos, name):
    sources, base, made = videos
    (remote,) = sources.fetch_many([(f"{base}/{name}", "video")])
    assert isinstance(remote, RemoteVideo) and remote.size == len(made[name])
    reader = open_video(remote, "pyav")
    try:
        assert reader.indexed
        indices = [50, 150, 250, 350]
        ours = list(reader.frames(indices))
        requested = reader.owned.requested_bytes
    finally:
        reader.close()
    downloaded = open_video(made[name], "pyav")
    assert all(np.array_equal(a, b) for a, b in zip(downloaded.frames(indices), ours))
    print(f"{name}: {requested} of {len(made[name])} bytes fetched")
    assert requested < len(made[name]) / 2, (requested, len(made[name]))
    sampler = VideoSampler(decoder="pyav")
    assert np.array_equal(sampler(remote, 8).tiles, sampler(made[name], 8).tiles)


def test_other_containers_are_downloaded_and_limits_hold(videos):
    sources, base, made = videos
    avi, missing = sources.fetch_many([(f"{base}/clip.avi", "video"), (f"{base}/absent.mp4", "video")])
    assert avi == made["clip.avi"]
    assert isinstance(missing, FetchError) and str(missing).endswith("not found")
    small = VideoSources(sources.fetcher, sources.storage, sources.fetch, VideoConfig(max_bytes=1000))
    (over,) = small.fetch_many([(f"{base}/last.mp4", "video")])
    assert isinstance(over, FetchError) and "exceeds video.max_bytes=1000" in str(over)
    decord = VideoSources(sources.fetcher, sources.storage, sources.fetch, VideoConfig(decoder="decord"))
    assert not decord.enabled


def test_a_truncated_mp4_is_an_error(videos):
    sources, base, _ = videos
    (remote,) = sources.fetch_many([(f"{base}/cut.mp4", "video")])
    assert isinstance(remote, RemoteVideo)
    with pytest.raises(VideoDecodeError, match="not a readable video"):
        VideoSampler(decoder="pyav")(remote, 8)


def test_the_isolated_decoder_child_opens_the_object_itself(videos):
    from internvl_batch.config import PreprocessConfig
    from internvl_batch.stages.isolated_decoder import IsolatedDecoder

    sources, base, made = videos
    uri = f"{base}/first.mp4"
    (remote,) = sources.fetch_many([(uri, "video")])
    decoder = IsolatedDecoder(PreprocessConfig(), VideoConfig(num_segments=4), None)  # the published tiling defaults
    try:
        decoded = decoder.decode([uri], "video", None, None, {uri: remote})
    finally:
        decoder.close()
    expected = VideoSampler(decoder="pyav")(made["first.mp4"], 4)
    assert decoded.video.frame_indices == expected.frame_indices
    assert np.array_equal(decoded.tiles, expected.tiles)


def test_an_object_replaced_after_its_probe_is_a_fetch_error(videos, s3):
    """The same size, other bytes (another ETag): the index of one version must not be read against another's."""
    sources, base, made = videos
    uri = f"{base}/swap.mp4"
    s3.pipe(uri.removeprefix("s3://"), made["first.mp4"])
    (remote,) = sources.fetch_many([(uri, "video")])
    assert isinstance(remote, RemoteVideo) and remote.tag
    changed = bytearray(made["first.mp4"])
    changed[-1] ^= 0xFF
    s3.pipe(uri.removeprefix("s3://"), bytes(changed))
    with pytest.raises(FetchError, match="replaced while being read"):
        open_video(remote, "pyav")
    s3.pipe(uri.removeprefix("s3://"), made["first.mp4"][:-1])  # another size
    with pytest.raises(FetchError, match=r"size \d+ -> \d+"):
        open_video(remote, "pyav")
