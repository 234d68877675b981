"""Fast mode (`preprocess.mode: fast`): the same tiles as exact mode, cut from cheaper pixels.

Only pixel values change. The grid, the tile count, the tile order, and so the prompt's token count, are
exact mode's: the grid is chosen from the image's true size (after EXIF orientation), whatever size it was
decoded at. Pixel limits, EXIF handling and errors are exact mode's own code (`decode.decode_pixels`).
Where the time goes instead:

1. JPEG DCT-domain downscaling: libjpeg decodes at 1/2, 1/4 or 1/8 scale (Pillow's `draft`) when the result
   is still at least as large as the grid resize (`decode_size`), so it only drops detail that the downscale
   would average away anyway. A 12 MP 4:3 photo (grid 1792x1344) decodes at 2000x1500.
2. Both resizes (grid, and the thumbnail from the decoded image as in exact mode) use torch's antialiased
   bicubic for uint8 (`F.interpolate(..., antialias=True)`): Pillow's filter (Keys a = -0.5, support widened
   by the scale) in vectorised fixed point, 3 to 8 times faster than Pillow's scalar code; on its own it
   usually differs from Pillow by at most 2 levels, in under 1% of the values (more in distorted resizes,
   below). It runs on torch's intra-op threads (one in a Ray actor that reserves one CPU).

The draft's extent is kept exact: when the scale does not divide the size (3001 px at 1/2 -> 1501 px, the
last one half padding), the resize maps the picture's true extent (1500.5 px), not the padded one, onto the
grid, on whichever side EXIF orientation moved the padding.

Measured deviation from exact mode (bench/preprocess.py and a sweep of random sizes; all tiles, uint8
levels; BENCHMARKS.md):
- no draft (PNG; JPEGs under twice the grid size): max 1-2, mean <= 0.005 for photo-like images; up to ~17
  (mean <= 0.25) in strongly distorted resizes, e.g. the thumbnail of a 200x1500 image, where one axis is
  upscaled and the other downscaled;
- JPEG draft: mean ~1 and max ~30-50 (on hard edges) for photo-like images (12 MP 4:3: max 43, mean 0.98);
  on images with strong per-pixel noise (sigma 12) the mean rises to ~3.5-4.2, max ~56.
tests/unit/imaging/test_fast_mode.py asserts these bounds with a margin.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from internvl_batch.imaging.tiles import copy_tiles, image_array
from internvl_batch.imaging.tiling import TILE_SIZE, TilePlan


def decode_size(plan: TilePlan, tile_size: int = TILE_SIZE) -> tuple[int, int]:
    """The smallest (width, height) the decoded image may have: the grid resize's size (the thumbnail, one
    tile, never needs more)."""
    return tile_size * plan.cols, tile_size * plan.rows


def cut_tiles_fast(image: Image.Image, plan: TilePlan, box=None, tile_size: int = TILE_SIZE) -> np.ndarray:
    """Like `preprocess.cut_tiles` (same grid, order and thumbnail rule), with torch's resize. `image` is RGB
    or L (grey); `box` is the part of it that holds the picture (`DecodedImage.box`; default all of it)."""
    import torch  # a project dependency; imported here so that exact mode never needs it

    cols, rows = plan.cols, plan.rows
    out = np.empty((plan.num_tiles, tile_size, tile_size, 3), dtype=np.uint8)
    if image.mode != "RGB":
        # torch's vectorised path wants 3 or 4 channels: a grey image resizes faster as RGB (same values)
        image = image.convert("RGB")
    # [h, w, c] uint8 -> [1, c, h, w], a channels-last view: the layout torch's vectorised uint8 path reads.
    source = torch.from_numpy(image_array(image)).permute(2, 0, 1).unsqueeze(0)
    grid = _resize(source, rows * tile_size, cols * tile_size, box)
    _planes_to_tiles(grid, out[: rows * cols].reshape(rows, cols, tile_size, tile_size, 3))
    if plan.thumbnail:
        # From the decoded image, as exact mode does: with torch's resize, taking it from the grid resize
        # would save ~5 ms on a 12 MP PNG and add up to ~10 levels of deviation.
        _planes_to_tiles(_resize(source, tile_size, tile_size, box), out[-1:].reshape(1, 1, tile_size, tile_size, 3))
    return out


def _resize(pixels, height: int, width: int, box=None):
    """Bicubic resize of the `box` region of a uint8 `[1, c, h, w]` tensor, antialiased like Pillow's.

    After a draft of a size the scale does not divide, the last decoded column/row is part padding and the
    picture spans a fractional `box`; resizing the whole decoded image instead would shift the content by up
    to half a decoded pixel (measured: max deviation 111 instead of 46 on a 3051x1915 JPEG). torch takes no
    box, but a scale factor: the box starts at 0 (flip first when an EXIF flip moved the padding to the
    start) and the scale maps exactly its width onto the output."""
    import torch.nn.functional as F

    in_h, in_w = pixels.shape[-2:]
    x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, float(in_w), float(in_h))
    flip = [dim for dim, start in ((-1, x0), (-2, y0)) if start > 0]
    if flip:
        pixels = pixels.flip(flip)
    if (x1 - x0, y1 - y0) == (in_w, in_h):
        if (in_h, in_w) == (height, width):
            return pixels.flip(flip) if flip else pixels
        out = F.interpolate(pixels, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    else:
        scales = (_scale(in_h, height, y1 - y0), _scale(in_w, width, x1 - x0))
        out = F.interpolate(
            pixels,
            scale_factor=scales,
            mode="bicubic",
            align_corners=False,
            antialias=True,
            recompute_scale_factor=False,
        )
    if tuple(out.shape[-2:]) != (height, width):
        raise RuntimeError(f"resize to {width}x{height} gave {tuple(out.shape[-2:])[::-1]}")
    return out.flip(flip) if flip else out


def _scale(size: int, out: int, extent: float) -> float:
    """The scale factor that maps `extent` pixels onto `out`, for an input of `size` >= `extent` pixels (torch's
    output size is int(size * scale), which must come out as `out`)."""
    scale = out / extent
    while int(size * scale) < out:  # only when size == extent, by an ulp
        scale = math.nextafter(scale, math.inf)
    return scale


def _planes_to_tiles(pixels, dest: np.ndarray) -> None:
    """`[1, c, h, w]` uint8 tensor -> RGB tiles `dest[rows, cols, T, T, 3]`.

    Interleaving the planes through Pillow (each plane mapped without a copy, then `merge`) is about twice as
    fast as a strided numpy or torch copy."""
    planes = pixels[0].contiguous().numpy()
    height, width = planes.shape[1:]
    bands = [Image.frombuffer("L", (width, height), plane, "raw", "L", 0, 1) for plane in planes]
    copy_tiles(bands[0] if len(bands) == 1 else Image.merge("RGB", bands), dest)
