"""The scan's reduce step and the wave plan, on hand-made records (no manifests, no Ray)."""

import numpy as np
import pyarrow as pa

from internvl_batch.manifest.scan import RECORD_SCHEMA, ScanTotals, plan_waves, reduce_partition
from internvl_batch.manifest.units import ManifestFile, ReadUnit


def records(rows):
    """rows: (id, unit, row, keys, done)"""
    return pa.table(
        {
            "id": [r[0] for r in rows],
            "position": pa.array([(r[1] << 32) | r[2] for r in rows], pa.uint64()),
            "malformed": [False] * len(rows),
            "keys": pa.array([r[3] for r in rows], pa.int32()),
            "done": pa.array([r[4] for r in rows], pa.int32()),
            "found": pa.array([r[3] for r in rows], pa.int32()),  # every key has a result: the rest are redone
            "changed": pa.array([r[3] - r[4] for r in rows], pa.int32()),
            "stale": pa.array([0] * len(rows), pa.int32()),
            "todo_high": pa.array([1] * len(rows), pa.uint64()),
            "todo_low": pa.array([2] * len(rows), pa.uint64()),
        },
        schema=RECORD_SCHEMA,
    )


def test_reduce_keeps_the_first_occurrence_and_counts_what_is_left():
    first = records([("a", 0, 0, 2, 2), ("b", 0, 1, 1, 0), ("a", 1, 0, 2, 0)])
    second = records([("c", 2, 5, 1, 0), ("b", 1, 7, 1, 1)])
    totals, drop = reduce_partition(first, second)
    assert drop.tolist() == [(1 << 32) | 0, (1 << 32) | 7]  # the later "a" and the later "b"
    assert (totals.rows, totals.keys, totals.done_keys, totals.todo_rows) == (3, 4, 2, 2)
    assert (totals.found_keys, totals.changed_keys, totals.stale_keys) == (4, 2, 0)  # duplicates not counted
    assert totals.todo_rows_by_unit == {0: 1, 2: 1} and totals.todo_checksum == (3, 6)
    assert (totals.duplicate_ids, totals.duplicate_rows, totals.duplicate_examples) == (2, 2, ["a", "b"])
    assert reduce_partition()[0] == ScanTotals() and not len(reduce_partition()[1])


def test_totals_add_up_across_partitions():
    a = ScanTotals(
        rows=2, keys=3, todo_rows=1, todo_rows_by_unit={0: 1}, todo_checksum=(2**64 - 1, 5), duplicate_examples=["z"]
    )
    b = ScanTotals(
        rows=1, keys=1, todo_rows=1, todo_rows_by_unit={0: 1, 3: 2}, todo_checksum=(2, 1), duplicate_examples=["a"]
    )
    total = a + b
    assert (total.rows, total.keys, total.todo_rows_by_unit, total.todo_checksum) == (3, 4, {0: 2, 3: 2}, (1, 6))
    assert total.duplicate_examples == ["a", "z"]


def test_waves_group_units_with_work_and_skip_the_rest():
    file = ManifestFile("m.jsonl", "jsonl", 100, "m.jsonl")
    units = [ReadUnit(i, file, i * 10, i * 10 + 10) for i in range(6)]
    totals = ScanTotals(todo_rows_by_unit={0: 40, 1: 70, 3: 10, 4: 200, 5: 5})
    waves = plan_waves(units, totals, 100)
    assert [([u.index for u in wave], rows) for wave, rows in waves] == [([0], 40), ([1, 3], 80), ([4], 200), ([5], 5)]
    assert plan_waves(units, ScanTotals(), 100) == []
    assert np.sum([rows for _, rows in plan_waves(units, totals, 10**9)]) == 325
