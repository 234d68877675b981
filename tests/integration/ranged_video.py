"""One check of ranged video reads (`video.ranged_reads`) against any object store: the stores' own tests
(moto in test_ranged_video_s3.py, the GCS emulator, Azurite) give it a filesystem and a URI."""

import numpy as np

from internvl_batch.config import FetchConfig, VideoConfig
from internvl_batch.errors import FetchError
from internvl_batch.imaging.remote_video import RemoteVideo
from internvl_batch.imaging.video import open_video
from internvl_batch.stages.video_sources import VideoSources
from internvl_batch.storage import KindPolicy, MediaFetcher


def check_ranged_video(fs, path: str, uri: str, storage, data: bytes) -> None:
    """`data` (an MP4) uploaded at `path` (`uri` on the store) is probed into a `RemoteVideo`, read in ranges
    with the downloaded file's frames and less than half its bytes; replaced with other bytes of the same size,
    it is refused when opened."""
    fs.pipe(path, data)
    fetch = FetchConfig()
    fetcher = MediaFetcher(storage, fetch, {"video": KindPolicy(2**30, "video.max_bytes", 2**30)})
    (remote,) = VideoSources(fetcher, storage, fetch, VideoConfig(max_bytes=2**30)).fetch_many([(uri, "video")])
    assert isinstance(remote, RemoteVideo) and remote.size == len(data) and remote.tag, remote
    reader = open_video(remote, "pyav")
    try:
        indices = [40, 120, 200, 280]
        assert reader.indexed and len(reader) == len(open_video(data, "pyav"))
        ours = list(reader.frames(indices))
        requested = reader.owned.requested_bytes
    finally:
        reader.close()
    assert all(np.array_equal(a, b) for a, b in zip(open_video(data, "pyav").frames(indices), ours))
    assert 0 < requested < len(data) / 2, (requested, len(data))
    changed = bytearray(data)
    changed[-1] ^= 0xFF
    fs.pipe(path, bytes(changed))
    try:
        open_video(remote, "pyav")
    except FetchError as exc:
        assert "replaced while being read" in str(exc)
    else:
        raise AssertionError("a replaced object was read")
