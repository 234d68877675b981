"""Encoded bytes (what object storage gives us) -> an RGB PIL image, or a clear row error.

The reference opens a file and calls `.convert('RGB')`; it ignores EXIF orientation. We apply the EXIF
orientation by default (phone photos are otherwise captioned sideways) and reproduce the reference bit for bit
with `exif_transpose=False`. Every PIL mode goes through the same `.convert('RGB')` the reference uses, so
RGBA/LA/P lose transparency the same way and 16-bit images are clipped the same way.
"""

from __future__ import annotations

import io
import re
import warnings

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from internvl_batch.errors import ImageDecodeError, PixelLimitError

# Pillow refuses images above 2x this many pixels by default; we make the limit explicit and configurable.
DEFAULT_MAX_PIXELS = 178_956_970


def _raise_pillow_guard(max_pixels: int) -> None:
    # Pillow's own bomb check runs inside Image.open, before ours; it must never be stricter than the limit
    # the user configured, or a deliberately raised limit would still be refused.
    if Image.MAX_IMAGE_PIXELS is not None and 2 * Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open (header only) and check the pixel limit before any pixel is decoded."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    _raise_pillow_guard(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else "the image"
        raise PixelLimitError(f"{size} exceeds max_pixels={max_pixels} (decompression-bomb protection)") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not an image: format not recognised ({len(data)} bytes, starting {data[:8]!r})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports broken headers with all three
        raise ImageDecodeError(f"unreadable image header: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PixelLimitError(f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} (decompression-bomb protection)")
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels: {width}x{height}")
    return image


def decode_image(data: bytes, exif_transpose: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `data` to an RGB image (first frame of animations, as the reference)."""
    image = open_image(data, max_pixels)
    fmt = image.format or "unknown format"
    try:
        if fmt == "PNG":
            # Pillow decodes PNG pixel data without checking chunk CRCs; a bad CRC means the bytes were
            # damaged in storage or transit, so check them (cheap: a CRC over the compressed data).
            Image.open(io.BytesIO(data)).verify()
        image.load()  # decode now, so corrupt and truncated files fail here and not in the middle of tiling
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated {fmt} data: {exc}") from None
    if exif_transpose:
        image = _apply_exif_orientation(image)
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(f"cannot convert {fmt} image of mode {image.mode} to RGB: {exc}") from None
    return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright; 2..8 = flipped and/or rotated), 1 when absent or unreadable."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost a readable image its row
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    # Checking the tag first avoids the full-image copy exif_transpose makes even for upright images.
    if exif_orientation(image) == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - as above: keep the pixels, lose only the rotation
        return image
