"""Grid choice and tile counts against the table measured on the reference implementation."""

import pytest

from internvl_batch.imaging.tiling import candidate_grids, choose_grid, plan_tiles

# (W, H): (grid at max_num=12, tiles @12, tiles @6, tiles @24); every row checked by running the reference code.
REFERENCE_TABLE = {
    (448, 448): ((1, 1), 1, 1, 1),
    (633, 633): ((1, 1), 1, 1, 1),
    (634, 634): ((2, 2), 5, 5, 5),
    (950, 950): ((2, 2), 5, 5, 5),
    (951, 951): ((3, 3), 10, 5, 10),
    (800, 600): ((4, 3), 13, 7, 13),
    (1920, 1080): ((4, 2), 9, 3, 16),
    (1080, 1920): ((2, 4), 9, 3, 16),
    (672, 448): ((3, 2), 7, 7, 7),
    (640, 427): ((3, 2), 7, 7, 7),
    (500, 2000): ((1, 4), 5, 5, 5),
    (1000, 250): ((4, 1), 5, 5, 5),
    (3000, 200): ((12, 1), 13, 7, 16),
    (2480, 3508): ((2, 3), 7, 7, 25),
    (1, 1): ((1, 1), 1, 1, 1),
    (10000, 1): ((12, 1), 13, 7, 25),
}


@pytest.mark.parametrize("size", list(REFERENCE_TABLE))
def test_reference_tile_table(size):
    grid12, tiles12, tiles6, tiles24 = REFERENCE_TABLE[size]
    assert choose_grid(*size, 1, 12) == grid12
    assert plan_tiles(*size, max_num=12).num_tiles == tiles12
    assert plan_tiles(*size, max_num=6).num_tiles == tiles6
    assert plan_tiles(*size, max_num=24).num_tiles == tiles24


@pytest.mark.parametrize("size", list(REFERENCE_TABLE))
def test_max_num_one_is_a_single_resize_without_thumbnail(size):
    plan = plan_tiles(*size, max_num=1)
    assert (plan.cols, plan.rows, plan.thumbnail, plan.num_tiles) == (1, 1, False, 1)


def test_thumbnail_only_when_more_than_one_tile():
    assert not plan_tiles(448, 448).thumbnail
    assert plan_tiles(800, 600).thumbnail
    assert plan_tiles(800, 600, use_thumbnail=False).num_tiles == 12


def test_candidates_sorted_by_area_and_bounded():
    grids = candidate_grids(2, 6)
    areas = [c * r for c, r in grids]
    assert areas == sorted(areas)
    assert min(areas) == 2 and max(areas) == 6
    assert len(grids) == len(set(grids))


def test_min_num_forces_more_tiles():
    assert plan_tiles(448, 448, min_num=4, max_num=12).cols * plan_tiles(448, 448, min_num=4, max_num=12).rows >= 4


def test_image_tokens_are_256_per_tile():
    assert plan_tiles(800, 600).num_image_tokens == 13 * 256


@pytest.mark.parametrize("bad", [(0, 1), (1, 0)])
def test_empty_image_rejected(bad):
    with pytest.raises(ValueError):
        choose_grid(*bad, 1, 12)


def test_bad_budget_rejected():
    with pytest.raises(ValueError):
        candidate_grids(3, 2)
