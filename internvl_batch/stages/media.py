"""Fetched bytes of one row -> its tiles: images tiled (the reference's rule, the multi-image budget), video
frames sampled, or a PDF's pages rendered and tiled one by one (`document` rows, and `image` rows whose bytes
are a PDF). Used by the CPU stage; one decode per row, whatever the number of tasks asked of it.

Failures raise `errors.RowFailure` (stage and cause; str() is the output's error text).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from internvl_batch.config import PreprocessConfig, VideoConfig
from internvl_batch.errors import DECODE, FETCH, LIMITS, DocumentError, LimitError, RowFailure, format_row_error
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.imaging.document import PdfRenderer, starts_as_pdf
from internvl_batch.imaging.remote_video import RemoteVideo
from internvl_batch.imaging.video import SampledVideo, VideoSampler
from internvl_batch.storage import LocalFile


@dataclass
class DecodedMedia:
    tiles: np.ndarray  # uint8 [n, 448, 448, 3]: every image's (or frame's) tiles, in prompt order
    num_tiles: list[int]  # per image or frame
    sizes: list[tuple[int, int]]  # (width, height) per image after EXIF orientation; per video, its frame size
    kind: str  # "image", "images" or "video" (a document's page is an "image")
    video: SampledVideo | None = None
    pixels: bytes | None = None  # the tiles' bytes when they arrived as bytes (`isolated_decoder.py`)


@dataclass
class DecodedPage:
    """One page of a document: its tiles as a one-image row, or the page's own error text."""

    number: int  # 1-based
    media: DecodedMedia | None
    error: str | None = None


def is_document(uris: list[str], kind: str, fetched) -> bool:
    """A `document` row, or a one-image row whose bytes are a PDF (URLs need not end in .pdf)."""
    if kind == "document":
        return True
    if kind != "image" or len(uris) != 1:
        return False
    data = fetched.get(uris[0])
    return isinstance(data, (bytes, bytearray, memoryview)) and starts_as_pdf(data)


class MediaDecoder:
    """Decoding of one row's media under the `preprocess` and `video` sections (`checkpoint`: the model's
    `CheckpointInfo`, for its image size and normalisation)."""

    def __init__(self, preprocess: PreprocessConfig, video: VideoConfig, checkpoint) -> None:
        self.preprocessor = ImagePreprocessor.from_options(preprocess, checkpoint)
        self.video = VideoSampler(video.max_duration_s, video.max_segments, video.decoder)
        self.default_segments = video.num_segments
        self.multi_image_max_num = preprocess.multi_image_max_num
        pre = self.preprocessor
        self.pdf = PdfRenderer(pre.min_num, pre.max_num, preprocess.max_pages)

    def is_document(self, uris: list[str], kind: str, fetched) -> bool:
        return is_document(uris, kind, fetched)

    def document(self, uri: str, fetched) -> tuple[int, list[DecodedPage]]:
        """(number of pages, each page tiled as one image); raises `RowFailure` for the whole document."""
        document = _as_row_failure(lambda: self.pdf.open(_source(fetched[uri])))
        count, pages = len(document), []
        for page in self.pdf.pages(document):
            if page.error is not None:
                pages.append(DecodedPage(page.number, None, format_row_error(DECODE, page.error)))
                continue
            try:
                image = self.preprocessor.process_image(page.image)
            except Exception as exc:  # noqa: BLE001
                pages.append(DecodedPage(page.number, None, format_row_error(DECODE, exc)))
                continue
            size = (image.plan.width, image.plan.height)
            pages.append(DecodedPage(page.number, DecodedMedia(image.tiles, [image.num_tiles], [size], "image")))
        return count, pages

    def decode(self, uris: list[str], kind: str, bound, segments, fetched: dict) -> DecodedMedia:
        if kind == "video":
            return self._video(uris[0], bound, segments, fetched)
        budget = None
        if len(uris) > 1:  # the reference's multi-image rule: the tile budget is shared
            budget = self.multi_image_max_num or max(1, self.preprocessor.max_num // len(uris))
        tiles, counts, sizes = [], [], []
        for uri in uris:
            try:
                source = _source(fetched[uri])
                if len(uris) > 1 and not isinstance(source, str) and starts_as_pdf(source):
                    raise DocumentError("a PDF cannot be one of several images: give it a row of its own (`document`)")
                image = self.preprocessor(source, max_num=budget)
            except RowFailure:
                raise
            except Exception as exc:  # noqa: BLE001 - decoders raise many types; any of them is this row's fault
                raise RowFailure(DECODE, exc) from None
            tiles.append(image.tiles)
            counts.append(image.num_tiles)
            sizes.append((image.plan.width, image.plan.height))
        return DecodedMedia(np.concatenate(tiles) if len(tiles) > 1 else tiles[0], counts, sizes, kind)

    def _video(self, uri: str, bound, segments, fetched: dict) -> DecodedMedia:
        clip = tuple(bound) if bound else None
        video = _as_row_failure(lambda: self.video(_source(fetched[uri]), segments or self.default_segments, clip))
        return DecodedMedia(video.tiles, [1] * video.num_frames, [video.frame_size], "video", video)


def _as_row_failure(call):
    """`call()`, its failures as this row's: a limit exceeded (`limits`) or anything else (`decode`)."""
    try:
        return call()
    except RowFailure:
        raise
    except LimitError as exc:
        raise RowFailure(LIMITS, exc) from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; any of them is this row's fault
        raise RowFailure(DECODE, exc) from None


def _source(fetched) -> bytes | str | RemoteVideo:
    """The fetched media as bytes, as a path for media kept in a file, or a video to read in byte ranges
    (`stages/video_sources.py`; the decoder opens it, in whichever process it runs)."""
    if isinstance(fetched, Exception):
        raise RowFailure(FETCH, fetched)
    return fetched.path if isinstance(fetched, LocalFile) else fetched
