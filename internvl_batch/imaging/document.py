"""PDF documents -> one RGB image per page, rasterised at the size the tiler will use (pypdfium2).

The rendering rule (no tile wasted, nothing upscaled): a page's tile grid is chosen from its aspect ratio by
the tiler's own rule (`tiling.choose_grid` with `preprocess.max_num`, the page's size taken at 300 DPI for the
reference's area tie-break), and the page is rasterised at the smallest scale at which it covers that grid,
i.e. at least 448 x cols by 448 x rows pixels; the tiler then resizes it to the grid as it resizes any image.
An A4 page (595 x 842 pt) with max_num 12 gets a 2 x 3 grid and is rendered at 950 x 1344 pixels (115 DPI):
6 tiles plus the thumbnail. Rendering more pixels would be thrown away by that resize; fewer would make the
tiler upscale. A page far from every grid's aspect ratio (a 1 x 1000 pt strip) is capped at 4x the grid's
pixels, so the rendered size is bounded by `max_num` whatever the page size says.

Failures raise `DocumentError` (not a PDF, password-protected, corrupt, no pages) or `LimitError` (more pages
than `preprocess.max_pages`) for the whole document; a page that fails to render is that page's error only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from internvl_batch.errors import DocumentError, LimitError
from internvl_batch.imaging.sniff import looks_like
from internvl_batch.imaging.tiling import TILE_SIZE, choose_grid

PDF_MAGIC = b"%PDF-"
PLANNING_DPI = 300  # the page size the grid choice sees (only its exact-tie rule depends on the area)
MAX_OVERSAMPLE = 4  # most rendered pixels per pixel of the tile grid (pages far from every grid's shape)


def is_pdf(data: bytes) -> bool:
    """Whether the bytes are a PDF: the header may follow up to 1 KB of junk, as readers allow."""
    return PDF_MAGIC in data[:1024]


def starts_as_pdf(data: bytes) -> bool:
    """Whether bytes given as an image are a PDF: the header first (after whitespace). Stricter than `is_pdf`,
    so that an image whose metadata happens to hold "%PDF-" in its first kilobyte stays an image."""
    return data[:64].lstrip(b"\x00\t\n\r\f ").startswith(PDF_MAGIC)


def render_scale(width_pt: float, height_pt: float, min_num: int, max_num: int) -> float:
    """Pixels per PDF point for a page of `width_pt` x `height_pt` points (the rule in the module docstring)."""
    dpi_scale = PLANNING_DPI / 72
    cols, rows = choose_grid(
        max(1, round(width_pt * dpi_scale)), max(1, round(height_pt * dpi_scale)), min_num, max_num
    )
    cover = max(TILE_SIZE * cols / width_pt, TILE_SIZE * rows / height_pt)
    cap = math.sqrt(MAX_OVERSAMPLE * TILE_SIZE * TILE_SIZE * cols * rows / (width_pt * height_pt))
    return min(cover, cap)


@dataclass
class RenderedPage:
    number: int  # 1-based
    image: Image.Image | None  # RGB; None when the page failed to render
    error: Exception | None = None


class PdfRenderer:
    """Build once per actor; `open` checks a document and `pages` renders it a page at a time."""

    def __init__(self, min_num: int, max_num: int, max_pages: int) -> None:
        self.min_num = min_num
        self.max_num = max_num
        self.max_pages = max_pages

    def open(self, data: bytes):
        """The pypdfium2 document, checked: raises `DocumentError` or `LimitError` for the whole document."""
        try:
            import pypdfium2
        except ImportError:
            raise RuntimeError("PDF documents need pypdfium2: pip install pypdfium2") from None
        if not is_pdf(data):
            raise DocumentError(f"not a PDF (the data looks like {looks_like(data)})")
        try:
            document = pypdfium2.PdfDocument(data)
        except pypdfium2.PdfiumError:
            # PDFium's error code is per thread and not reset by every failure (a document without pages fails
            # with the previous failure's code), so it is not trusted: encryption is told from the bytes.
            if b"/Encrypt" in data:
                raise DocumentError("password-protected PDF (encrypted documents are not read)") from None
            raise DocumentError("unreadable PDF (corrupt, truncated, or without pages)") from None
        pages = len(document)
        if pages == 0:
            document.close()
            raise DocumentError("PDF has no pages")
        if pages > self.max_pages:
            document.close()
            raise LimitError(f"document has {pages} pages, over preprocess.max_pages={self.max_pages}")
        return document

    def pages(self, document) -> Iterator[RenderedPage]:
        """Each page rendered (white background, annotations and forms drawn); closes the document at the end."""
        try:
            for index in range(len(document)):
                try:
                    page = document[index]
                    try:
                        width, height = page.get_size()
                        if not (width > 0 and height > 0):
                            raise DocumentError(f"page {index + 1} has no area ({width} x {height} pt)")
                        scale = render_scale(width, height, self.min_num, self.max_num)
                        image = page.render(scale=scale, may_draw_forms=True).to_pil().convert("RGB")
                    finally:
                        page.close()
                    yield RenderedPage(index + 1, image)
                except Exception as exc:  # noqa: BLE001 - pdfium raises several types; it is this page's fault
                    yield RenderedPage(index + 1, None, exc)
        finally:
            document.close()
