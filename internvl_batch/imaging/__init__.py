"""Image decoding and InternVL tiling (CPU side; pixels leave here as uint8)."""

from internvl_batch.imaging.decode import decode_image
from internvl_batch.imaging.preprocess import ImagePreprocessor, ProcessedImage
from internvl_batch.imaging.tiling import TILE_SIZE, TOKENS_PER_TILE, TilePlan, choose_grid, plan_tiles

__all__ = [
    "TILE_SIZE",
    "TOKENS_PER_TILE",
    "ImagePreprocessor",
    "ProcessedImage",
    "TilePlan",
    "choose_grid",
    "decode_image",
    "plan_tiles",
]
