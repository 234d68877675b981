"""Pixels into tiles: resize an image to its grid (the reference's bicubic) and copy it out tile by tile.

Shared by the exact path (`preprocess.py`), the fast path (`fast.py`) and video frames (`video.py`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from internvl_batch.imaging.tiling import TILE_SIZE, TilePlan

# Pillow's default for RGB images when `resize` gets no resample argument, which is what the reference calls.
RESAMPLE = Image.Resampling.BICUBIC
# Pixel rows are handed from Pillow to numpy in chunks of about this many bytes (Pillow's own tobytes block).
_CHUNK_BYTES = 1 << 16


def cut_tiles(image: Image.Image, plan: TilePlan, tile_size: int = TILE_SIZE) -> np.ndarray:
    """Resize `image` (RGB, or L for grey) to the plan's grid and cut it into row-major tiles, plus the thumbnail.

    An L image gives the tiles its RGB conversion would give: Pillow resizes each band with the same integer
    filter, so resizing the grey band once and copying it to R, G and B is bit-identical, for a third of the
    resize work.
    """
    cols, rows = plan.cols, plan.rows
    out = np.empty((plan.num_tiles, tile_size, tile_size, 3), dtype=np.uint8)
    grid = image.resize((tile_size * cols, tile_size * rows), RESAMPLE)
    copy_tiles(grid, out[: rows * cols].reshape(rows, cols, tile_size, tile_size, 3))
    if plan.thumbnail:
        # The thumbnail is resized from the original image, not from the grid resize.
        copy_tiles(image.resize((tile_size, tile_size), RESAMPLE), out[-1:].reshape(1, 1, tile_size, tile_size, 3))
    return out


def copy_tiles(image: Image.Image, dest: np.ndarray) -> None:
    """Copy `image` into `dest[rows, cols, h, w, c]` (uint8), cut into `rows` x `cols` tiles of `w` x `h` pixels:
    tile (r, c) lands at `dest[r, c]`. `c` is 3 (RGB; an L image is expanded as `convert('RGB')` does) or 1 (L).

    Pillow stores RGB as 4 bytes a pixel. `np.asarray(image)` packs the whole image to 3 bytes in chunks, joins
    them into one bytes object that is then copied into the tiles: two image-sized temporaries. Here Pillow's
    raw packer fills a small buffer a few dozen rows at a time and each chunk goes straight to its tiles.
    """
    rows, cols, tile_h, tile_w, channels = dest.shape
    if image.size != (cols * tile_w, rows * tile_h) or channels not in (1, 3):
        raise ValueError(f"a {image.size} image does not fill {rows}x{cols} tiles of {tile_w}x{tile_h}x{channels}")
    mode = "RGB" if channels == 3 else "L"
    if image.mode != mode:
        image = image.convert(mode)  # L -> RGB copies the grey value to each band (exact)
    image.load()
    try:
        encoder = _raw_encoder(mode)
    except Exception:  # noqa: BLE001 - a Pillow without it: the slower public route, same bytes
        dest[...] = np.asarray(image).reshape(rows, tile_h, cols, tile_w, channels).swapaxes(1, 2)
        return
    linesize = image.width * channels
    lines = max(1, _CHUNK_BYTES // linesize)
    y, status = 0, 0
    try:
        encoder.setimage(image.im, (0, 0, image.width, image.height))
        while not status:
            # The raw encoder writes whole rows only: `chunk` is k complete rows.
            _, status, chunk = encoder.encode(lines * linesize)
            block = np.frombuffer(chunk, np.uint8).reshape(-1, cols, tile_w, channels)  # [k, cols, w, c]
            done = 0
            while done < block.shape[0]:
                r, top = divmod(y, tile_h)
                n = min(block.shape[0] - done, tile_h - top)
                dest[r, :, top : top + n] = block[done : done + n].swapaxes(0, 1)
                done += n
                y += n
    finally:
        encoder.cleanup()
    if status < 0 or y != image.height:
        raise RuntimeError(f"Pillow's raw encoder stopped at row {y} of {image.height} (status {status})")


def _raw_encoder(mode: str):
    return Image._getencoder(mode, "raw", mode)  # what Image.tobytes uses (private API: copy_tiles falls back)


def image_array(image: Image.Image) -> np.ndarray:
    """A writable `[h, w, 3]` (RGB) or `[h, w, 1]` (L) uint8 copy of the pixels."""
    channels = 1 if image.mode == "L" else 3
    out = np.empty((image.height, image.width, channels), dtype=np.uint8)
    copy_tiles(image, out.reshape(1, 1, image.height, image.width, channels))
    return out
