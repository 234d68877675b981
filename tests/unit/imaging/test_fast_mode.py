"""Fast mode: exact mode's grids, tile counts, limits and errors; pixels within the documented deviation.

Deviation bounds (uint8 levels, all tiles) are the ones measured and documented in
`internvl_batch/imaging/fast.py` and BENCHMARKS.md, with a margin. `tests.media.make_photo` has strong
per-pixel noise (sigma 12), the worst case for the JPEG draft: mean ~3.5-4.2 there, ~1 on the benchmark's
photo-like images.
"""

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from internvl_batch.config import PreprocessConfig
from internvl_batch.errors import ImageDecodeError, PixelLimitError
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.imaging.decode import decode_pixels
from internvl_batch.imaging.fast import decode_size
from tests.media import encode, make_photo, png_with_broken_crc, png_with_header_size

# Without a JPEG draft only torch-vs-Pillow rounding differs (measured max 2, mean <= 0.006).
NO_DRAFT_MAX, NO_DRAFT_MEAN = 3, 0.02
# Strongly distorted aspect ratios (thumbnails of 200x1500 or 37x901, a 900x6000 grid; measured max 17, mean 0.21).
DISTORTED_MAX, DISTORTED_MEAN = 24, 0.35
# With a JPEG draft (measured on these noisy images: max 56, mean 4.2; 1.0 on the benchmark's photos).
DRAFT_MAX, DRAFT_MEAN = 72, 5.0

REPO = Path(__file__).resolve().parents[3]


def both(data: bytes, **options):
    exact = ImagePreprocessor(mode="exact", **options)(data)
    fast = ImagePreprocessor(mode="fast", **options)(data)
    return exact, fast


def deviation(exact, fast) -> np.ndarray:
    return np.abs(exact.tiles.astype(np.int16) - fast.tiles.astype(np.int16))


def reduced_size(data: bytes, **options) -> tuple[tuple[int, int], tuple[int, int]]:
    """(decoded size, true size) as fast mode decodes `data`."""
    pre = ImagePreprocessor(mode="fast", **options)
    decoded = decode_pixels(data, pre.exif_transpose, pre.max_pixels, min_size=lambda w, h: decode_size(pre.plan(w, h)))
    return decoded.image.size, decoded.size


SHAPES = [
    (1, 1),
    (2, 3),
    (448, 448),
    (633, 633),
    (634, 634),
    (950, 950),
    (951, 951),
    (800, 600),
    (3000, 200),
    (200, 1500),
    (1920, 1080),
    (37, 901),
    (10000, 1),
    (1, 3000),
    (1900, 1000),
    (2000, 2000),
]


@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_same_plan_and_tile_count_as_exact(size, fmt):
    data = encode(make_photo(*size, seed=size[0] % 7), fmt)
    exact, fast = both(data)
    assert fast.plan == exact.plan
    assert fast.tiles.shape == exact.tiles.shape and fast.tiles.dtype == np.uint8


@pytest.mark.parametrize(
    "max_num,use_thumbnail,min_num",
    [(1, True, 1), (2, True, 1), (6, True, 1), (24, True, 1), (12, False, 1), (12, True, 4)],
)
def test_same_plan_for_every_budget(max_num, use_thumbnail, min_num):
    data = encode(make_photo(2600, 1500, seed=4), "JPEG")
    exact, fast = both(data, max_num=max_num, use_thumbnail=use_thumbnail, min_num=min_num)
    assert fast.plan == exact.plan and fast.tiles.shape == exact.tiles.shape
    # a multi-image row's budget goes through the same path
    pre_e = ImagePreprocessor(max_num=max_num, min_num=min_num)
    pre_f = ImagePreprocessor(max_num=max_num, min_num=min_num, mode="fast")
    assert pre_f(data, max_num=1).plan == pre_e(data, max_num=1).plan


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_same_plan_and_close_pixels(orientation):
    # 1901x1001 at max_num=2: a (2, 1) grid stored, (1, 2) displayed for 5..8; large enough for a 1/2 draft,
    # which decodes 951x501 pixels of which the last column and row are half padding. After each EXIF
    # transpose that padding is on a different side; resizing without accounting for it shifts the content
    # by half a pixel (measured: max 112-121, mean 6.9-10 instead of 46 / 3.5).
    data = encode(make_photo(1901, 1001, seed=1), "JPEG", exif_orientation=orientation)
    exact, fast = both(data, max_num=2)
    assert fast.plan == exact.plan
    transposed = orientation >= 5
    assert (fast.plan.width, fast.plan.height) == ((1001, 1901) if transposed else (1901, 1001))
    assert (fast.plan.cols, fast.plan.rows) == ((1, 2) if transposed else (2, 1))
    d = deviation(exact, fast)
    assert d.mean() < DRAFT_MEAN and d.max() <= DRAFT_MAX
    decoded, true = reduced_size(data, max_num=2)
    assert true == (fast.plan.width, fast.plan.height)
    assert decoded == ((501, 951) if transposed else (951, 501))


def test_exif_off_uses_the_stored_orientation():
    data = encode(make_photo(1900, 1000, seed=1), "JPEG", exif_orientation=6)
    exact, fast = both(data, max_num=2, exif_transpose=False)
    assert fast.plan == exact.plan and (fast.plan.cols, fast.plan.rows) == (2, 1)


@pytest.mark.parametrize(
    "w,h,budget",
    [(1900, 1000, 2), (3600, 2700, 12), (1000, 1000, 1), (2000, 2000, 1), (3003, 2001, 12), (1803, 1799, 1)],
)
def test_draft_deviation_within_documented_bound_and_really_fast(w, h, budget):
    data = encode(make_photo(w, h, seed=2), "JPEG")
    exact, fast = both(data, max_num=budget)
    d = deviation(exact, fast)
    assert d.mean() < DRAFT_MEAN and d.max() <= DRAFT_MAX
    # Fast mode must not quietly be exact mode: the JPEG was decoded reduced, and the pixels show it.
    decoded, true = reduced_size(data, max_num=budget)
    assert true == (w, h) and decoded[0] < w and decoded[1] < h
    assert d.mean() > 0.5


@pytest.mark.parametrize("size", [(800, 600), (1920, 1080), (3000, 200), (634, 634), (1900, 1000), (10000, 1)])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_no_draft_deviation_within_documented_bound(size, fmt):
    data = encode(make_photo(*size, seed=3), fmt)
    exact, fast = both(data)
    d = deviation(exact, fast)
    assert d.max() <= NO_DRAFT_MAX and d.mean() < NO_DRAFT_MEAN
    assert reduced_size(data)[0] == size  # nothing to skip: the grid needs (nearly) all the pixels
    assert d.max() >= 1  # torch's resize, not Pillow's: fast mode is not exact mode under another name


@pytest.mark.parametrize("size", [(200, 1500), (37, 901), (900, 6000)])
def test_distorted_aspect_deviation_within_documented_bound(size):
    data = encode(make_photo(*size, seed=5), "PNG")
    d = deviation(*both(data))
    assert d.max() <= DISTORTED_MAX and d.mean() < DISTORTED_MEAN


def test_draft_never_decodes_below_the_grid():
    # The draft may only skip what the grid downscale throws away: decoded >= grid in both directions.
    drafted = 0
    for w, h in [
        (1792, 1344),
        (3584, 2688),
        (3583, 2688),
        (4000, 3000),
        (3000, 4000),
        (8000, 1000),
        (900, 7000),
        (1000, 1000),
        (897, 449),
        (2000, 2000),
    ]:
        for max_num in (1, 2, 6, 12, 24):
            for orientation in (1, 6):
                data = encode(Image.new("RGB", (w, h), (90, 120, 150)), "JPEG", exif_orientation=orientation)
                pre = ImagePreprocessor(max_num=max_num, mode="fast")
                (dw, dh), (tw, th) = reduced_size(data, max_num=max_num)  # both as displayed (EXIF applied)
                assert (tw, th) == ((h, w) if orientation == 6 else (w, h))
                plan = pre.plan(tw, th)
                assert dw >= min(tw, 448 * plan.cols) and dh >= min(th, 448 * plan.rows), (w, h, max_num, orientation)
                drafted += (dw, dh) != (tw, th)
    assert drafted >= 40  # of 100: the check above is not vacuous


def test_mpo_is_drafted_like_jpeg():
    buf = io.BytesIO()
    make_photo(2000, 1600, seed=1).save(buf, "MPO", save_all=True, append_images=[make_photo(2000, 1600, seed=2)])
    data = buf.getvalue()
    exact, fast = both(data, max_num=1)
    assert fast.plan == exact.plan
    assert reduced_size(data, max_num=1)[0] == (1000, 800)
    assert deviation(exact, fast).mean() < DRAFT_MEAN


@pytest.mark.parametrize("mode", ["L", "LA", "1", "P", "RGBA", "CMYK"])
def test_other_modes_same_plan_and_close(mode):
    base = make_photo(900, 700, seed=6)
    image = base.convert(mode) if mode != "P" else base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    data = encode(image, "JPEG" if mode == "CMYK" else "PNG")
    exact, fast = both(data)
    assert fast.plan == exact.plan
    d = deviation(exact, fast)
    assert d.max() <= NO_DRAFT_MAX + (1 if mode == "1" else 0) and d.mean() < NO_DRAFT_MEAN * 5


def test_grey_jpeg_draft():
    data = encode(make_photo(2000, 2000, seed=1).convert("L"), "JPEG")
    exact, fast = both(data, max_num=1)
    assert reduced_size(data, max_num=1)[0] == (500, 500)
    d = deviation(exact, fast)
    assert d.mean() < DRAFT_MEAN and d.max() <= DRAFT_MAX
    assert np.array_equal(fast.tiles[..., 0], fast.tiles[..., 2])  # still grey


def _outcome(pre: ImagePreprocessor, data: bytes, **kwargs) -> str:
    try:
        pre(data, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the outcome, whatever it is, is what gets compared
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def _broken_inputs() -> dict[str, bytes]:
    jpeg = encode(make_photo(1900, 1000, seed=1), "JPEG")
    return {
        "empty": b"",
        "not an image": b"hello, this is text, not pixels",
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "truncated jpeg header": jpeg[:300],
        "png bad crc": png_with_broken_crc(),
        "pixel bomb header": png_with_header_size(100_000, 100_000),
    }


@pytest.mark.parametrize("name", list(_broken_inputs()))
def test_errors_identical_to_exact(name):
    data = _broken_inputs()[name]
    exact = _outcome(ImagePreprocessor(max_num=2), data)
    assert exact != "ok"
    assert _outcome(ImagePreprocessor(max_num=2, mode="fast"), data) == exact


def test_pixel_limit_identical_to_exact():
    data = encode(make_photo(1900, 1000, seed=1), "JPEG")
    for limit in (1_899_999, 1_900_000):
        exact = _outcome(ImagePreprocessor(max_pixels=limit), data)
        assert _outcome(ImagePreprocessor(max_pixels=limit, mode="fast"), data) == exact
    with pytest.raises(PixelLimitError, match="1900x1000 = 1900000 pixels exceeds max_pixels=1899999"):
        ImagePreprocessor(max_pixels=1_899_999, mode="fast")(data)
    with pytest.raises(ImageDecodeError, match="corrupt or truncated JPEG"):
        ImagePreprocessor(mode="fast")(data[:-5000])


def test_from_options_honours_mode():
    assert ImagePreprocessor.from_options(PreprocessConfig()).mode == "exact"
    pre = ImagePreprocessor.from_options(PreprocessConfig(mode="fast", max_num=6))
    assert pre.mode == "fast" and pre.max_num == 6
    data = encode(make_photo(1900, 1000, seed=1), "JPEG")
    assert pre(data).plan == ImagePreprocessor.from_options(PreprocessConfig(max_num=6))(data).plan
    with pytest.raises(ValueError, match="mode"):
        ImagePreprocessor(mode="turbo")


def test_process_image_in_fast_mode():
    image = make_photo(1000, 700, seed=2)
    exact = ImagePreprocessor().process_image(image)
    fast = ImagePreprocessor(mode="fast").process_image(image)
    assert fast.plan == exact.plan
    d = deviation(exact, fast)
    assert d.max() <= NO_DRAFT_MAX and d.mean() < NO_DRAFT_MEAN


@pytest.mark.slow
def test_bench_quick_run(tmp_path):
    # The benchmark's smoke run: it checks exact mode against the reference recipe before timing anything.
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "preprocess.py"), "--quick", "--json", str(out)],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    import json

    results = json.loads(out.read_text())["results"]
    assert results and all(r["exact_max_diff_normalised"] <= 1e-6 for r in results)
    assert all(r["bytes_float32"] == 4 * r["bytes_uint8"] for r in results)
