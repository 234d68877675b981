"""Synthetic test media: deterministic photos with texture, encoded for real, with optional EXIF."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def make_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image with gradients, edges and noise, so that resampling differences show.

    Red rises left to right, green top to bottom, blue is a 16-pixel checkerboard, plus Gaussian noise (sigma
    12). Built in place on the noise array (the same pixels as stacking full coordinate grids, ~8x faster:
    large photos are made by many tests)."""
    rng = np.random.default_rng(seed)
    x = np.arange(width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)[:, None]
    arr = rng.normal(0, 12, (height, width, 3))
    arr[..., 0] += (x / max(width - 1, 1)) * 255
    arr[..., 1] += (y / max(height - 1, 1)) * 255
    arr[..., 2] += ((x // 16 + y // 16) % 2) * 200 + 20
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


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


INDEX_BITS = 10


def index_frame(index: int, width: int, height: int) -> np.ndarray:
    """A frame whose pixels spell its own index: INDEX_BITS vertical stripes, white for 1, black for 0."""
    frame = np.zeros((height, width, 3), np.uint8)
    stripe = width // INDEX_BITS
    for bit in range(INDEX_BITS):
        if index >> bit & 1:
            frame[:, bit * stripe : (bit + 1) * stripe] = 255
    return frame


def read_frame_index(tile: np.ndarray) -> int:
    """The index spelled by `index_frame`, read back from a (resized) frame or tile."""
    gray = tile.mean(axis=2)
    width = gray.shape[1]
    value = 0
    for bit in range(INDEX_BITS):
        centre = int((bit + 0.5) * width / INDEX_BITS)
        if gray[:, centre].mean() > 127:
            value |= 1 << bit
    return value


def encode_video(
    num_frames: int, fps: float, width: int = 320, height: int = 240, gop: int = 30, codec: str = "h264"
) -> bytes:
    """An MP4 (H.264 by default) whose frame k shows the index k (see `index_frame`)."""
    import fractions

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "g": str(gop), "bf": "0"} if codec == "h264" else {}
        for k in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(k, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def encode_audio_only(seconds: float = 1.0) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = int(16000 * seconds)
        pts = 0
        for start in range(0, samples, 1024):
            n = min(1024, samples - start)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, n), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, pts
            pts += n
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


A4_AT_150_DPI = (1240, 1754)  # 8.27 x 11.69 in


def scanned_page(number: int, size: tuple[int, int] = A4_AT_150_DPI) -> Image.Image:
    """A white "scanned" page: lines of dark text-like strokes, and in its top-left corner a block whose grey
    level is 20 x `number`, so that a test can tell the pages apart and check their order after rendering."""
    width, height = size
    page = np.full((height, width, 3), 250, np.uint8)
    rng = np.random.default_rng(number)
    for top in range(height // 6, height - height // 10, max(height // 40, 4)):
        for left in range(width // 10, width - width // 10, max(width // 12, 4)):
            word = int(rng.integers(width // 30, width // 14))
            page[top : top + max(height // 120, 2), left : left + word] = 30
    page[: height // 8, : width // 8] = 20 * number
    return Image.fromarray(page, "RGB")


def encode_pdf(pages: list[Image.Image], dpi: float = 150.0) -> bytes:
    """A real image-only PDF, one page per image at `dpi` (Pillow's PDF writer: what scanners produce)."""
    buf = io.BytesIO()
    pages[0].save(buf, "PDF", save_all=True, append_images=pages[1:], resolution=dpi)
    return buf.getvalue()


def encrypt_pdf(data: bytes, password: str = "secret") -> bytes:
    """The same PDF, password-protected (pypdf, a test-only dependency)."""
    import pypdf

    writer = pypdf.PdfWriter()
    writer.append(pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt(password, algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def empty_pdf() -> bytes:
    """A well-formed PDF with no pages."""
    import pypdf

    buf = io.BytesIO()
    pypdf.PdfWriter().write(buf)
    return buf.getvalue()
