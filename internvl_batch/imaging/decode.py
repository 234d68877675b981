"""Encoded bytes (what object storage gives us) -> an RGB PIL image, or a clear row error.

The reference opens a file and calls `.convert('RGB')`; it ignores EXIF orientation. We apply the EXIF
orientation by default (phone photos are otherwise captioned sideways) and reproduce the reference bit for bit
with `exif_transpose=False`. Every PIL mode goes through the same `.convert('RGB')` the reference uses, so
RGBA/LA/P lose transparency the same way and 16-bit images are clipped the same way.

`decode_pixels` is what the tiler uses: the same checks and errors, but it may stop short of RGB (greyscale
stays `L`, which resizes three times cheaper and expands to identical RGB afterwards) and, in fast mode only,
may let libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale (Pillow's `draft`) when the result is still at least
as large as the tiles need. It reports the image's true size, which decides the tile grid in both modes.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from internvl_batch.config.media import DEFAULT_MAX_PIXELS
from internvl_batch.errors import ImageDecodeError, PixelLimitError
from internvl_batch.imaging.sniff import looks_like

# Modes whose `.convert('RGB')` copies one grey channel into R, G and B (LA drops alpha, 1 maps to 0/255 as
# its conversion to L does), so their pixels can stay grey until after the resize.
_GREY_MODES = ("L", "LA", "1")
# Formats whose decoder can downscale while decoding (libjpeg's DCT scaling; MPO is a multi-picture JPEG).
_DRAFT_FORMATS = ("JPEG", "MPO")
# EXIF orientations that swap width and height.
_TRANSPOSING = (5, 6, 7, 8)


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
        raise ImageDecodeError(
            f"not an image: format not recognised ({len(data)} bytes that look like {looks_like(data)})"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports broken headers with all three
        raise ImageDecodeError(f"unreadable image header: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PixelLimitError(
            f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} (decompression-bomb protection)"
        )
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels: {width}x{height}")
    return image


def decode_image(data: bytes, exif_transpose: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `data` to an RGB image (first frame of animations, as the reference)."""
    return decode_pixels(data, exif_transpose, max_pixels).image


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels, and the size the tile grid is chosen from."""

    image: Image.Image  # RGB, or L when `keep_grey`; smaller than `size` only after a fast-mode JPEG draft
    size: tuple[int, int]  # true (width, height) of the image, after EXIF orientation
    # After a draft, the part of `image` that shows the whole picture, (x0, y0, x1, y1) in its pixels: the
    # picture's size divided by the scale, which is fractional when the scale does not divide it (4001 px at
    # 1/2 decode to 2001 px, the last one half padding). None: all of `image`.
    box: tuple[float, float, float, float] | None = None


def decode_pixels(
    data: bytes,
    exif_transpose: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    keep_grey: bool = False,
    min_size: Callable[[int, int], tuple[int, int]] | None = None,
) -> DecodedImage:
    """Decode with the checks and errors of `decode_image`.

    `keep_grey`: L, LA and 1 images come back as L (their RGB conversion is that grey value three times).
    `min_size(width, height) -> (w, h)`: fast mode only. Given the true size, the smallest image the caller
    needs; a JPEG is then decoded at the largest DCT scale (1/2, 1/4, 1/8) that still gives at least that.
    This changes pixel values (libjpeg's scaled IDCT is not the bicubic filter), never the reported size.
    """
    image = open_image(data, max_pixels)
    fmt = image.format or "unknown format"
    stored = image.size
    box = None
    if min_size is not None and fmt in _DRAFT_FORMATS:
        box = _draft(image, min_size, exif_orientation(image) if exif_transpose else 1)
    try:
        if fmt == "PNG":
            # Pillow decodes PNG pixel data without checking chunk CRCs; a bad CRC means the bytes were
            # damaged in storage or transit, so check them (cheap: a CRC over the compressed data).
            Image.open(io.BytesIO(data)).verify()
        image.load()  # decode now, so corrupt and truncated files fail here and not in the middle of tiling
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated {fmt} data: {exc}") from None
    size = stored
    if exif_transpose:
        decoded = image.size
        image, orientation = _apply_exif_orientation(image)
        if orientation in _TRANSPOSING:
            size = (stored[1], stored[0])
        if box is not None:
            box = _orient_box(box, decoded, orientation)
    target = "L" if keep_grey and image.mode in _GREY_MODES else "RGB"
    if image.mode != target:
        try:
            image = image.convert(target)
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(f"cannot convert {fmt} image of mode {image.mode} to {target}: {exc}") from None
    return DecodedImage(image, size, box)


def _draft(image: Image.Image, min_size: Callable[[int, int], tuple[int, int]], orientation: int):
    """Ask libjpeg for a DCT-scaled decode no smaller than `min_size` needs, whichever way EXIF turns out.
    Returns the picture's extent in the reduced image's pixels, or None when the image is decoded as is."""
    width, height = image.size
    # min_size works on the displayed (oriented) image; the draft on the stored one. Should the orientation
    # fail to apply after decoding, the grid is chosen from the stored size: cover that case too.
    need_w, need_h = min_size(width, height)
    if orientation in _TRANSPOSING:
        rot_w, rot_h = min_size(height, width)
        need_w, need_h = max(need_w, rot_h), max(need_h, rot_w)
    # Pillow picks the largest scale s in (8, 4, 2, 1) with s <= min(width // need_w, height // need_h), so the
    # result, ceil(width / s) x ceil(height / s), is never smaller than asked. Scale 1 changes nothing: skip it.
    if width // need_w < 2 or height // need_h < 2:
        return None
    drafted = image.draft(image.mode, (need_w, need_h))
    if drafted is None:  # Pillow declined (an image of several tiles): decoded at full size
        return None
    return tuple(float(v) for v in drafted[1])  # (0, 0, width / scale, height / scale)


# Where a point (x, y) of a w x h image goes under each EXIF orientation's transpose (ImageOps.exif_transpose).
_ORIENT_POINT = {
    2: lambda x, y, w, h: (w - x, y),  # FLIP_LEFT_RIGHT
    3: lambda x, y, w, h: (w - x, h - y),  # ROTATE_180
    4: lambda x, y, w, h: (x, h - y),  # FLIP_TOP_BOTTOM
    5: lambda x, y, w, h: (y, x),  # TRANSPOSE
    6: lambda x, y, w, h: (h - y, x),  # ROTATE_270 (90 degrees clockwise)
    7: lambda x, y, w, h: (h - y, w - x),  # TRANSVERSE
    8: lambda x, y, w, h: (y, w - x),  # ROTATE_90 (90 degrees anticlockwise)
}


def _orient_box(box, size: tuple[int, int], orientation: int):
    """`box` in a `size` image -> the same region after the orientation's transpose."""
    if orientation == 1:
        return box
    move = _ORIENT_POINT[orientation]
    (ax, ay), (bx, by) = move(box[0], box[1], *size), move(box[2], box[3], *size)
    return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright; 2..8 = flipped and/or rotated), 1 when absent or unreadable."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost a readable image its row
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_exif_orientation(image: Image.Image) -> tuple[Image.Image, int]:
    """The image turned upright, and the orientation that was applied (1 when none was)."""
    # Checking the tag first avoids the full-image copy exif_transpose makes even for upright images.
    orientation = exif_orientation(image)
    if orientation == 1:
        return image, 1
    try:
        return ImageOps.exif_transpose(image), orientation
    except Exception:  # noqa: BLE001 - as above: keep the pixels, lose only the rotation
        return image, 1
