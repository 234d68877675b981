"""Small embedded pictures of a row's media for the report: an image, a PDF page, a video's sampled frames.

Media are read again by URI through the job's fetcher (its retries, size limits and address checks apply: a
report made from a manifest's URIs cannot reach internal networks either). What cannot be read any more
gives a `Thumbnail` with `error` set, shown as a placeholder, never an exception.

Local media (paths, `file://` URIs) are read only under the report's local roots (`report_fetch_config`), so a
result row naming some other file the reporting user can read does not put that file in the page.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass

from PIL import Image, ImageOps

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.errors import PathRefused
from internvl_batch.imaging.decode import decode_image
from internvl_batch.imaging.video import open_video
from internvl_batch.local_media import LocalRoots
from internvl_batch.report.collect import read_summary
from internvl_batch.storage import KindPolicy, MediaFetcher

THUMBNAIL_PX = 320  # longest side of an image's thumbnail
FRAME_PX = 120  # longest side of a video frame in the strip


def report_fetch_config(
    output_path: str,
    storage: StorageConfig,
    fetch: FetchConfig | None = None,
    local_roots: list[str] | None = None,
) -> FetchConfig:
    """The fetch settings a report reads media with: `fetch`'s (default `FetchConfig()`), with the local roots

    - `local_roots` when given (`internvl-batch report --local-root DIR`, relative to the working directory);
    - else `fetch.local_roots` when it is set (the job's own report passes its resolved config);
    - else the roots the output's latest run recorded (its summary: config.fetch.local_roots; only absolute
      paths: a relative one meant the job's working directory), and `[]` without such a record: no local
      media are read."""
    fetch = fetch or FetchConfig()
    if local_roots is not None:
        roots = [os.path.abspath(os.path.expanduser(root)) for root in local_roots]
    elif fetch.local_roots is not None:
        return fetch
    else:
        roots = recorded_local_roots(output_path, storage)
    return fetch.model_copy(update={"local_roots": roots})


def recorded_local_roots(output_path: str, storage: StorageConfig) -> list[str]:
    """The absolute local roots recorded by the output's latest run; `[]` when there is no such record."""
    summary = read_summary(output_path, storage) or {}
    config = summary.get("config") if isinstance(summary, dict) else None
    fetch = config.get("fetch") if isinstance(config, dict) else None
    roots = fetch.get("local_roots") if isinstance(fetch, dict) else None
    if not isinstance(roots, list):
        return []
    return [root for root in roots if isinstance(root, str) and os.path.isabs(root)]


@dataclass
class Thumbnail:
    images: list[str]  # data: URIs (JPEG); several for a video's frames
    width: int = 0  # of the first image, as shown
    height: int = 0
    error: str | None = None


class MediaThumbnails:
    """Thumbnails by URI; build once per report."""

    def __init__(self, storage, fetch) -> None:
        video = KindPolicy(2 * 2**30, "video.max_bytes", spill_bytes=64 * 2**20)
        self.fetcher = MediaFetcher(storage, fetch, {"video": video, "document": KindPolicy(2**30, "fetch.max_bytes")})

    def for_row(self, row: dict) -> Thumbnail:
        media = row.get("media") or []
        if not media:
            return Thumbnail([], error="the row has no media")
        try:
            if row.get("frame_indices"):
                return self._video(media[0], row["frame_indices"])
            if row.get("page"):
                return self._page(media[0], row["page"])
            return self._image(media[0])
        except PathRefused as exc:
            if self._outside_roots(media[0]):
                return Thumbnail([], error=outside_roots_message(media[0], self.fetcher.local_roots))
            return Thumbnail([], error=f"not shown: {exc}"[:300])
        except Exception as exc:  # noqa: BLE001 - a report shows what it can
            message = str(exc) if media[0] in str(exc) else f"{media[0]}: {exc}"
            return Thumbnail([], error=f"the media could not be read ({type(exc).__name__}): {message}"[:300])

    @staticmethod
    def _outside_roots(uri: str) -> bool:
        """Whether a refused local path was refused for the roots only (not /proc, nor a remote file:// host)."""
        try:
            LocalRoots(None).path_of(uri)
        except PathRefused:
            return False
        return True

    def _image(self, uri: str) -> Thumbnail:
        image = decode_image(self.fetcher.fetch(uri))  # EXIF-oriented, as the boxes' pixels
        return _thumbnail(image, THUMBNAIL_PX)

    def _page(self, uri: str, page: int) -> Thumbnail:
        import pypdfium2

        document = pypdfium2.PdfDocument(self.fetcher.fetch(uri, "document"))
        try:
            pdf_page = document[page - 1]
            scale = THUMBNAIL_PX / max(pdf_page.get_width(), pdf_page.get_height())
            image = pdf_page.render(scale=scale).to_pil()
        finally:
            document.close()
        return _thumbnail(image, THUMBNAIL_PX)

    def _video(self, uri: str, indices: list[int]) -> Thumbnail:
        fetched = self.fetcher.fetch(uri, "video")
        try:
            reader = open_video(fetched if isinstance(fetched, bytes) else fetched.path)
            try:
                frames = list(reader.frames(list(indices)))
            finally:
                reader.close()
        finally:
            self.fetcher.release([fetched])
        strips = [_thumbnail(Image.fromarray(frame), FRAME_PX) for frame in frames]
        return Thumbnail([s.images[0] for s in strips], strips[0].width, strips[0].height)


def outside_roots_message(uri: str, roots: LocalRoots) -> str:
    """The placeholder's text for local media outside the report's local roots (the file is not read)."""
    return (
        f"not shown: {uri} is outside the report's local roots ({roots.describe()}). To show local media from "
        "another directory: internvl-batch report OUTPUT --local-root DIR (repeatable; it replaces the roots "
        "recorded by the run)"
    )


def _thumbnail(image: Image.Image, size: int) -> Thumbnail:
    image = ImageOps.contain(image.convert("RGB"), (size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    return Thumbnail(["data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()], *image.size)
