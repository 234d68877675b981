"""Encoded image bytes -> uint8 tiles `[n, 448, 448, 3]` (HWC, RGB), exactly as the reference cuts them.

The reference also converts each tile to float32 and normalises it with the ImageNet mean/std on the CPU. We
stop at uint8: it is a quarter of the bytes through Ray's object store, and normalisation is done once on the
model's device (`internvl_batch.generation.pixels`), where it is the same arithmetic and costs nothing.

Two modes. `exact` (the default) gives the reference's pixels bit for bit; its cost is the JPEG/PNG decode
and the two bicubic resizes of the full image (grid and thumbnail), which exactness cannot skip (grey images
are resized as one band, which is exact and three times cheaper). `fast` (`internvl_batch.imaging.fast`)
decodes large JPEGs at a reduced DCT scale and resizes with torch's vectorised bicubic: same grid, same tile
count, pixels within a few levels. Measured speeds and deviations: `bench/preprocess.py`, BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from internvl_batch.config.media import DEFAULT_MAX_PIXELS
from internvl_batch.imaging.decode import decode_pixels
from internvl_batch.imaging.fast import cut_tiles_fast, decode_size
from internvl_batch.imaging.tiles import cut_tiles
from internvl_batch.imaging.tiling import TilePlan, plan_tiles

MODES = ("exact", "fast")


@dataclass(frozen=True)
class ProcessedImage:
    """Tiles of one image, in the order the model sees them (grid row-major, thumbnail last)."""

    tiles: np.ndarray  # uint8 [num_tiles, 448, 448, 3]
    plan: TilePlan

    @property
    def num_tiles(self) -> int:
        return int(self.tiles.shape[0])


class ImagePreprocessor:
    """Callable that turns encoded bytes into tiles. Configure once (per actor), call per image.

    `max_num`, `min_num` and `use_thumbnail` default to the checkpoint's `max_dynamic_patch`,
    `min_dynamic_patch` and `use_thumbnail` when built with `from_options`. `mode="fast"` trades bit-exactness
    for speed on large images (see `internvl_batch.imaging.fast`); grids and tile counts never change.
    """

    def __init__(
        self,
        max_num: int = 12,
        min_num: int = 1,
        use_thumbnail: bool = True,
        exif_transpose: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        mode: Literal["exact", "fast"] = "exact",
    ) -> None:
        if not 1 <= min_num <= max_num:
            raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.max_num = max_num
        self.min_num = min_num
        self.use_thumbnail = use_thumbnail
        self.exif_transpose = exif_transpose
        self.max_pixels = max_pixels
        self.mode = mode

    @classmethod
    def from_options(cls, options, checkpoint=None) -> ImagePreprocessor:
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
            mode=options.mode,
        )

    def plan(self, width: int, height: int, max_num: int | None = None) -> TilePlan:
        """Tiling of a `width` x `height` image; `max_num` overrides the budget (multi-image rows split it)."""
        budget = self.max_num if max_num is None else max_num
        return plan_tiles(width, height, min(self.min_num, budget), budget, self.use_thumbnail)

    def process_image(self, image: Image.Image, max_num: int | None = None) -> ProcessedImage:
        """Tiles of an already decoded image; the grid is chosen from `image`'s size."""
        plan = self.plan(image.width, image.height, max_num)
        return ProcessedImage(self._cut(image, plan), plan)

    def __call__(self, data: bytes, max_num: int | None = None) -> ProcessedImage:
        min_size = None
        if self.mode == "fast":

            def min_size(width: int, height: int) -> tuple[int, int]:
                return decode_size(self.plan(width, height, max_num))

        decoded = decode_pixels(data, self.exif_transpose, self.max_pixels, keep_grey=True, min_size=min_size)
        # The grid comes from the true size (after EXIF orientation), never from a reduced decode.
        plan = self.plan(*decoded.size, max_num)
        return ProcessedImage(self._cut(decoded.image, plan, decoded.box), plan)

    def _cut(self, image: Image.Image, plan: TilePlan, box=None) -> np.ndarray:
        if self.mode == "fast":
            return cut_tiles_fast(image, plan, box)
        return cut_tiles(image, plan)
