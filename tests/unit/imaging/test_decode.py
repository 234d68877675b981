"""Decoding from bytes: EXIF orientation, every PIL mode to RGB as the reference, and clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from internvl_batch.errors import ImageDecodeError, PixelLimitError
from internvl_batch.imaging import ImagePreprocessor, decode_image
from tests.media import encode, make_photo, png_with_broken_crc, png_with_header_size


def reference_decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_exif_orientation_applied_by_default():
    photo = make_photo(640, 480)
    data = encode(photo, "JPEG", exif_orientation=6)  # stored landscape, displayed rotated 90 degrees
    assert decode_image(data).size == (480, 640)
    out = ImagePreprocessor()(data)
    assert (out.plan.width, out.plan.height) == (480, 640)
    assert (out.plan.cols, out.plan.rows) == (3, 4)


def test_exif_off_reproduces_reference_bit_for_bit():
    data = encode(make_photo(640, 480), "JPEG", exif_orientation=6)
    assert np.array_equal(np.asarray(decode_image(data, exif_transpose=False)), reference_decode(data))


@pytest.mark.parametrize("orientation,expected", [(1, (64, 32)), (3, (64, 32)), (5, (32, 64)), (8, (32, 64))])
def test_exif_orientations(orientation, expected):
    data = encode(make_photo(64, 32), "JPEG", exif_orientation=orientation)
    assert decode_image(data).size == expected


def test_upright_image_is_pixel_identical_with_exif_on():
    data = encode(make_photo(300, 200), "JPEG", exif_orientation=1)
    assert np.array_equal(np.asarray(decode_image(data)), reference_decode(data))


def _mode_samples():
    base = make_photo(40, 30)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((40, 30)))
    p_trans = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p_trans.info["transparency"] = 0
    i16 = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 3)
    return {
        "RGB": (base, "PNG"),
        "RGBA": (rgba, "PNG"),
        "LA": (rgba.convert("LA"), "PNG"),
        "P-transparency": (p_trans, "PNG"),
        "L": (base.convert("L"), "PNG"),
        "1": (base.convert("1"), "PNG"),
        "CMYK": (base.convert("CMYK"), "JPEG"),
        "I;16": (i16, "PNG"),
        "GIF-P": (base.convert("P"), "GIF"),
        "WEBP": (base, "WEBP"),
    }


@pytest.mark.parametrize("name", list(_mode_samples()))
def test_every_mode_becomes_rgb_as_reference(name):
    image, fmt = _mode_samples()[name]
    data = encode(image, fmt)
    ours = decode_image(data, exif_transpose=True)
    assert ours.mode == "RGB"
    assert np.array_equal(np.asarray(ours), reference_decode(data))


def test_empty_bytes():
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")


def test_not_an_image():
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"hello, this is text, not pixels")


def test_truncated_jpeg():
    data = encode(make_photo(400, 300), "JPEG")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def test_png_with_broken_crc():
    with pytest.raises(ImageDecodeError):
        decode_image(png_with_broken_crc())


def test_pixel_limit_checked_from_the_header_before_decoding():
    bomb = png_with_header_size(100_000, 100_000)
    assert len(bomb) < 200
    with pytest.raises(PixelLimitError, match="max_pixels"):
        decode_image(bomb)


def test_configurable_pixel_limit():
    data = encode(make_photo(100, 100), "PNG")
    with pytest.raises(PixelLimitError, match="100x100 = 10000 pixels exceeds max_pixels=9999"):
        decode_image(data, max_pixels=9_999)
    assert decode_image(data, max_pixels=10_000).size == (100, 100)


def test_raised_limit_is_not_overruled_by_pillow():
    bomb = png_with_header_size(20_000, 20_000)  # 400 MP: above Pillow's own default refusal threshold
    with pytest.raises(ImageDecodeError):  # allowed by the limit, so it gets as far as decoding and fails there
        decode_image(bomb, max_pixels=500_000_000)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(decode_image(buf.getvalue()))[0, 0]) == (255, 0, 0)
