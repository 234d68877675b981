import pytest

from internvl_batch.generation.batching import BatchLimits, padding_fraction, plan_micro_batches


def test_every_row_exactly_once_and_sorted_by_length():
    lengths = [300, 3400, 50, 1800, 3400, 60]
    batches = plan_micro_batches(lengths, [1] * 6, 16, BatchLimits(max_rows=2, max_padding=1.0))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(6))
    assert [lengths[i] for i in flat] == sorted(lengths)
    assert all(len(b) <= 2 for b in batches)


def test_token_budget_counts_padding_and_new_tokens():
    batches = plan_micro_batches([100, 100, 1000], [1, 1, 1], 28, BatchLimits(max_tokens=2 * 128, max_padding=1.0))
    assert batches == [[0, 1], [2]]  # 2 x (100 + 28) fits exactly; the 1000-token row stands alone


def test_tile_budget():
    batches = plan_micro_batches([10, 11, 12], [13, 13, 1], 1, BatchLimits(max_tiles=20, max_padding=1.0))
    assert batches == [[0], [1, 2]]


def test_oversized_row_gets_its_own_batch():
    assert plan_micro_batches([5000], [40], 64, BatchLimits(max_tokens=100, max_tiles=10)) == [[0]]


def test_padding_fraction():
    assert padding_fraction([10, 10], [[0, 1]]) == 0
    assert padding_fraction([10, 30], [[0, 1]]) == pytest.approx(1 / 3)  # 20 of 60 positions


def test_mismatched_inputs():
    with pytest.raises(ValueError):
        plan_micro_batches([1, 2], [1], 1, BatchLimits())


def test_padding_bound_keeps_one_tile_and_thirteen_tile_rows_apart():
    lengths = [350, 360, 3400, 3420, 355, 3410]  # 1-tile and 13-tile rows
    batches = plan_micro_batches(lengths, [1, 1, 13, 13, 1, 13], 64, BatchLimits())
    assert sorted(map(sorted, batches)) == [[0, 1, 4], [2, 3, 5]]
    assert padding_fraction(lengths, batches) < 0.01
    mixed = plan_micro_batches(lengths, [1, 1, 13, 13, 1, 13], 64, BatchLimits(max_padding=1.0))
    assert len(mixed) == 1 and padding_fraction(lengths, mixed) > 0.4  # what a plain batch_chat-style batch wastes
