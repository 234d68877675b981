"""InternVL "dynamic high resolution": which grid of 448-pixel tiles an image is cut into.

Pure arithmetic, no pixels: `inspect`, the cost planner and the tiler all share it, so the tile count that
a user plans with is the one the job produces.

Reference behaviour reproduced here (InternVL 2.5 `dynamic_preprocess`):
- candidates are the grids (cols, rows) with min_num <= cols*rows <= max_num, ordered by area; within one area
  the order is the iteration order of the Python set the reference builds, which matters for exact ties;
- the grid whose cols/rows is closest to width/height wins; on an exact tie a later candidate replaces the
  current one only when the image area exceeds half the candidate's pixel area;
- a thumbnail (the whole image resized to one tile) is appended when more than one tile was cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

TILE_SIZE = 448
TOKENS_PER_TILE = 256  # (448 / 14) ** 2 patches, pixel-shuffled by 0.5 in each direction


@lru_cache(maxsize=256)
def candidate_grids(min_num: int, max_num: int) -> tuple[tuple[int, int], ...]:
    """Grids (cols, rows) in the order the reference scans them."""
    if min_num < 1 or max_num < min_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
    # The reference collects the grids in a set and stable-sorts by area, so ties within one area keep the
    # set's iteration order. Tuples of small ints hash deterministically, so building the same set gives the
    # same order in every process.
    grids = {
        (cols, rows)
        for n in range(min_num, max_num + 1)
        for cols in range(1, n + 1)
        for rows in range(1, n + 1)
        if min_num <= cols * rows <= max_num
    }
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def choose_grid(width: int, height: int, min_num: int, max_num: int, tile_size: int = TILE_SIZE) -> tuple[int, int]:
    """The (cols, rows) grid the reference picks for an image of `width` x `height` pixels."""
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels: {width}x{height}")
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_num, max_num):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


@dataclass(frozen=True)
class TilePlan:
    """How one image becomes tiles: the grid, and whether a thumbnail tile is appended last."""

    width: int
    height: int
    cols: int
    rows: int
    thumbnail: bool

    @property
    def num_tiles(self) -> int:
        return self.cols * self.rows + int(self.thumbnail)

    @property
    def num_image_tokens(self) -> int:
        return self.num_tiles * TOKENS_PER_TILE


def plan_tiles(width: int, height: int, min_num: int = 1, max_num: int = 12, use_thumbnail: bool = True) -> TilePlan:
    """The full tiling decision for one image (grid plus thumbnail rule)."""
    cols, rows = choose_grid(width, height, min_num, max_num)
    return TilePlan(width, height, cols, rows, thumbnail=use_thumbnail and cols * rows > 1)
