"""The CPU stage's fetch of a batch's media, with videos on object stores left in place when they can be read
in byte ranges (`video.ranged_reads`, PyAV: `imaging/remote_video.py`).

Such a video is probed (its size, checked against `video.max_bytes`, and its first bytes) on a fetch thread;
an MP4/MOV becomes a `RemoteVideo` that the decoder opens itself, whether it runs in the actor or in its child
process (`isolated_decoder.py` sends the value, which names the object and the settings, not an open file).
Anything else, and a probe that fails for any reason but the size limit, goes to the `MediaFetcher` as before
(which then reports a missing object, a denied one or a transient failure with its own retries and words).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from internvl_batch.config import FetchConfig, StorageConfig, VideoConfig
from internvl_batch.errors import FetchError
from internvl_batch.imaging.remote_video import is_ranged_candidate, probe
from internvl_batch.imaging.video import resolve_decoder
from internvl_batch.storage import MediaFetcher


class VideoSources:
    """`fetch_many` as `MediaFetcher.fetch_many`, but for videos read in ranges: a `RemoteVideo` is their value."""

    def __init__(self, fetcher: MediaFetcher, storage: StorageConfig, fetch: FetchConfig, video: VideoConfig):
        self.fetcher, self.storage, self.fetch = fetcher, storage, fetch
        self.max_bytes = video.max_bytes
        self.enabled = video.ranged_reads and resolve_decoder(video.decoder) == "pyav"
        self._pool = None  # made on the first video to probe

    def fetch_many(self, items: list[tuple[str, str]]) -> list:
        """Bytes, a LocalFile, a RemoteVideo or the exception, per (uri, media kind), in order."""
        ranged = [
            i for i, (uri, kind) in enumerate(items) if self.enabled and kind == "video" and is_ranged_candidate(uri)
        ]
        if not ranged:
            return self.fetcher.fetch_many(items)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.fetch.threads, thread_name_prefix="video-probe")
        probes = {i: self._pool.submit(self._one, items[i][0]) for i in ranged}  # overlap with the other reads
        rest = [i for i in range(len(items)) if i not in probes]
        results: list = [None] * len(items)
        for i, value in zip(rest, self.fetcher.fetch_many([items[i] for i in rest])):
            results[i] = value
        for i, future in probes.items():
            results[i] = future.result()
        return results

    def _one(self, uri: str):
        try:
            remote = probe(uri, self.storage, self.fetch, self.max_bytes, "video.max_bytes")
        except FetchError as exc:  # over the limit: an error row, nothing read
            return exc
        except Exception:  # noqa: BLE001 - the fetcher reads it again and says what is wrong, with its retries
            remote = None
        if remote is not None:
            return remote
        try:
            return self.fetcher.fetch(uri, "video")
        except Exception as exc:  # noqa: BLE001 - returned as a value for the row, as fetch_many does
            return exc
