"""Synthetic test media: deterministic photos with texture, encoded for real, with optional EXIF."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def make_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image with gradients, edges and noise, so that resampling differences show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = (x / max(width - 1, 1)) * 255
    g = (y / max(height - 1, 1)) * 255
    b = ((x // 16 + y // 16) % 2) * 200 + 20
    arr = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "PNG", exif_orientation: int | None = None, **kwargs) -> bytes:
    buf = io.BytesIO()
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose IHDR claims `width` x `height` (a decompression-bomb header)."""
    data = encode(Image.new("L", (1, 1)), "PNG")
    ihdr_start = 8  # after the signature: length(4) type(4) data(13) crc(4)
    body = bytearray(data[ihdr_start + 8 : ihdr_start + 8 + 13])
    body[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(body)) & 0xFFFFFFFF)
    return data[: ihdr_start + 8] + bytes(body) + crc + data[ihdr_start + 8 + 13 + 4 :]


def png_with_broken_crc() -> bytes:
    """A PNG whose IDAT chunk CRC is wrong."""
    data = bytearray(encode(make_photo(32, 32), "PNG"))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    crc_at = idat + 4 + length
    data[crc_at] ^= 0xFF
    return bytes(data)
