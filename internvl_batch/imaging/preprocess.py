"""Encoded image bytes -> uint8 tiles `[n, 448, 448, 3]` (HWC, RGB), exactly as the reference cuts them.

The reference also converts each tile to float32 and normalises it with the ImageNet mean/std on the CPU. We
stop at uint8: it is a quarter of the bytes through Ray's object store, and normalisation is done once on the
model's device (`internvl_batch.generation.pixels`), where it is the same arithmetic and costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from internvl_batch.imaging.decode import DEFAULT_MAX_PIXELS, decode_image
from internvl_batch.imaging.tiling import TILE_SIZE, TilePlan, plan_tiles

# Pillow's default for RGB images when `resize` gets no resample argument, which is what the reference calls.
RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class ProcessedImage:
    """Tiles of one image, in the order the model sees them (grid row-major, thumbnail last)."""

    tiles: np.ndarray  # uint8 [num_tiles, 448, 448, 3]
    plan: TilePlan

    @property
    def num_tiles(self) -> int:
        return int(self.tiles.shape[0])


def cut_tiles(image: Image.Image, plan: TilePlan, tile_size: int = TILE_SIZE) -> np.ndarray:
    """Resize `image` (RGB) to the plan's grid and cut it into row-major tiles, plus the thumbnail."""
    cols, rows = plan.cols, plan.rows
    resized = np.asarray(image.resize((tile_size * cols, tile_size * rows), RESAMPLE))
    out = np.empty((plan.num_tiles, tile_size, tile_size, 3), dtype=np.uint8)
    # [rows*T, cols*T, 3] -> [rows, T, cols, T, 3] -> [rows, cols, T, T, 3]: tile k is (row k // cols, col k % cols)
    grid = resized.reshape(rows, tile_size, cols, tile_size, 3).swapaxes(1, 2)
    out[: rows * cols] = grid.reshape(rows * cols, tile_size, tile_size, 3)
    if plan.thumbnail:
        # The thumbnail is resized from the original image, not from the grid resize.
        out[-1] = np.asarray(image.resize((tile_size, tile_size), RESAMPLE))
    return out


class ImagePreprocessor:
    """Callable that turns encoded bytes into tiles. Configure once (per actor), call per image.

    `max_num`, `min_num` and `use_thumbnail` default to the checkpoint's `max_dynamic_patch`,
    `min_dynamic_patch` and `use_thumbnail` when built with `from_options`.
    """

    def __init__(
        self,
        max_num: int = 12,
        min_num: int = 1,
        use_thumbnail: bool = True,
        exif_transpose: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if not 1 <= min_num <= max_num:
            raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        self.max_num = max_num
        self.min_num = min_num
        self.use_thumbnail = use_thumbnail
        self.exif_transpose = exif_transpose
        self.max_pixels = max_pixels

    @classmethod
    def from_options(cls, options, checkpoint=None) -> "ImagePreprocessor":
        """From a `PreprocessConfig`; unset tiling fields come from the checkpoint (`CheckpointInfo`), else
        from the published configs' values (12, 1, thumbnail on)."""
        defaults = (
            (checkpoint.max_dynamic_patch, checkpoint.min_dynamic_patch, checkpoint.use_thumbnail)
            if checkpoint is not None
            else (12, 1, True)
        )
        max_num = options.max_num if options.max_num is not None else defaults[0]
        min_num = options.min_num if options.min_num is not None else min(defaults[1], max_num)
        return cls(
            max_num=max_num,
            min_num=min_num,
            use_thumbnail=options.use_thumbnail if options.use_thumbnail is not None else defaults[2],
            exif_transpose=options.exif_transpose,
            max_pixels=options.max_pixels,
        )

    def decode(self, data: bytes) -> Image.Image:
        return decode_image(data, exif_transpose=self.exif_transpose, max_pixels=self.max_pixels)

    def plan(self, width: int, height: int, max_num: int | None = None) -> TilePlan:
        """Tiling of a `width` x `height` image; `max_num` overrides the budget (multi-image rows split it)."""
        budget = self.max_num if max_num is None else max_num
        return plan_tiles(width, height, min(self.min_num, budget), budget, self.use_thumbnail)

    def process_image(self, image: Image.Image, max_num: int | None = None) -> ProcessedImage:
        plan = self.plan(image.width, image.height, max_num)
        return ProcessedImage(cut_tiles(image, plan), plan)

    def __call__(self, data: bytes, max_num: int | None = None) -> ProcessedImage:
        return self.process_image(self.decode(data), max_num)
