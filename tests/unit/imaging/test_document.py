"""PDF pages rendered at the size the tiler uses (real PDFs made by Pillow and pypdf, rendered by PDFium)."""

import numpy as np
import pytest

from internvl_batch.errors import DocumentError, LimitError
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.imaging.document import PdfRenderer, is_pdf, render_scale
from internvl_batch.imaging.tiling import plan_tiles
from tests.media import empty_pdf, encode, encode_pdf, encrypt_pdf, make_photo, scanned_page

A4 = (595.2, 841.92)  # points
LETTER = (612.0, 792.0)


def render(data: bytes, max_num: int = 12, max_pages: int = 50):
    renderer = PdfRenderer(1, max_num, max_pages)
    return list(renderer.pages(renderer.open(data)))


@pytest.mark.parametrize(
    "points, grid", [(A4, (2, 3)), (LETTER, (3, 4)), ((842.0, 595.0), (4, 3)), ((300, 300), (3, 3))]
)
def test_a_page_is_rendered_to_cover_its_grid_and_no_more(points, grid):
    """A square page gets 3 x 3: at 300 DPI it is large enough for the reference's tie-break to pick more tiles."""
    width, height = points
    scale = render_scale(width, height, 1, 12)
    cols, rows = grid
    # Covers the grid in both directions, and exactly in one of them: nothing upscaled, nothing thrown away.
    assert width * scale >= 448 * cols - 1e-6 and height * scale >= 448 * rows - 1e-6
    assert min(width * scale - 448 * cols, height * scale - 448 * rows) < 1e-6
    # The tiler, given the rendered image, keeps the grid the page was rendered for.
    plan = plan_tiles(round(width * scale), round(height * scale))
    assert (plan.cols, plan.rows) == grid


def test_a4_page_figures_stated_in_the_docs():
    (page,) = render(encode_pdf([scanned_page(1)]))
    assert page.image.size == (951, 1344)  # 595.2 pt x 1.596 = 950.1 -> 951 (PDFium rounds up)
    tiles = ImagePreprocessor().process_image(page.image)
    assert (tiles.plan.cols, tiles.plan.rows, tiles.num_tiles) == (2, 3, 7)


def test_a_strip_far_from_every_grid_is_capped():
    scale = render_scale(1.0, 1000.0, 1, 12)
    assert (1.0 * scale) * (1000.0 * scale) == pytest.approx(4 * 12 * 448 * 448)


def test_pages_come_in_order_with_their_content():
    pages = render(encode_pdf([scanned_page(n) for n in (1, 2, 3)]))
    assert [p.number for p in pages] == [1, 2, 3] and all(p.error is None for p in pages)
    # Each page's corner block has grey level 20 x its number (tests/media.py).
    assert [int(np.asarray(p.image)[10, 10, 0]) for p in pages] == [20, 40, 60]


def test_pages_of_different_shapes_get_their_own_grids():
    portrait, landscape = scanned_page(1), scanned_page(2, size=(1754, 1240))
    pages = render(encode_pdf([portrait, landscape]))
    plans = [ImagePreprocessor().process_image(p.image).plan for p in pages]
    assert [(p.cols, p.rows) for p in plans] == [
        (2, 3),
        (4, 3),
    ]  # the reference rule is not symmetric: 1.415 is nearer 4:3 than 3:2


def test_max_num_bounds_the_rendering():
    (page,) = render(encode_pdf([scanned_page(1)]), max_num=1)
    assert page.image.size == (448, 634)  # one tile: the page covers 448 x 448, its width is the limit


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda pdf: b"hello, I am text", "not a PDF (the data looks like text)"),
        (lambda pdf: encode(make_photo(64, 64), "JPEG"), "not a PDF (the data looks like a JPEG image)"),
        (lambda pdf: encrypt_pdf(pdf), "password-protected PDF"),
        (lambda pdf: pdf[: len(pdf) // 3], "unreadable PDF"),
        (lambda pdf: empty_pdf(), "unreadable PDF (corrupt, truncated, or without pages)"),
    ],
)
def test_bad_documents_are_refused_with_their_cause(make, message):
    with pytest.raises(DocumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PdfRenderer(1, 12, 50).open(make(encode_pdf([scanned_page(1), scanned_page(2)])))


def test_more_pages_than_max_pages_is_a_limit():
    with pytest.raises(LimitError, match=r"document has 3 pages, over preprocess.max_pages=2"):
        PdfRenderer(1, 12, 2).open(encode_pdf([scanned_page(n) for n in (1, 2, 3)]))


def test_is_pdf_allows_junk_before_the_header():
    assert is_pdf(b"%PDF-1.7\n") and is_pdf(b"\x00" * 100 + b"%PDF-1.4") and not is_pdf(b"GIF89a")
