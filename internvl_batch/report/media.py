"""Small embedded pictures of a row's media for the report: an image, a PDF page, a video's sampled frames.

Media are read again by URI through the job's fetcher (its retries, size limits and address checks apply: a
report made from a manifest's URIs cannot reach internal networks either). What cannot be read any more
gives a `Thumbnail` with `error` set, shown as a placeholder, never an exception.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image, ImageOps

THUMBNAIL_PX = 320  # longest side of an image's thumbnail
FRAME_PX = 120  # longest side of a video frame in the strip


@dataclass
class Thumbnail:
    images: list[str]  # data: URIs (JPEG); several for a video's frames
    width: int = 0  # of the first image, as shown
    height: int = 0
    error: str | None = None


class MediaThumbnails:
    """Thumbnails by URI; build once per report."""

    def __init__(self, storage, fetch) -> None:
        from internvl_batch.storage import KindPolicy, MediaFetcher

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
        except Exception as exc:  # noqa: BLE001 - a report shows what it can
            message = str(exc) if media[0] in str(exc) else f"{media[0]}: {exc}"
            return Thumbnail([], error=f"the media could not be read ({type(exc).__name__}): {message}"[:300])

    def _image(self, uri: str) -> Thumbnail:
        from internvl_batch.imaging.decode import decode_image

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
        from internvl_batch.imaging.video import open_video

        fetched = self.fetcher.fetch(uri, "video")
        try:
            reader = open_video(fetched if isinstance(fetched, bytes) else fetched.path)
            frames = reader.get_batch(list(indices)).asnumpy()
        finally:
            self.fetcher.release([fetched])
        strips = [_thumbnail(Image.fromarray(frame), FRAME_PX) for frame in frames]
        return Thumbnail([s.images[0] for s in strips], strips[0].width, strips[0].height)


def _thumbnail(image: Image.Image, size: int) -> Thumbnail:
    image = ImageOps.contain(image.convert("RGB"), (size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    return Thumbnail(["data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()], *image.size)
