"""The scan: one pass over the manifests, on the workers, before any model work.

It counts what the summary and the progress need (rows, malformed rows, blank lines, result keys expected,
already done, and the checksum of those still to do), learns each pass-through column's type, and finds
duplicate ids, without collecting ids on the driver:

    scan_unit (one task per read unit)  ->  per-row records, split into `partitions` by a hash of the id
    reduce_partition (one task per partition)  ->  totals, duplicate ids (compared as real ids, so a hash
                                                    collision cannot drop a row), positions to drop

The driver receives one `UnitScan` per unit and one `ScanTotals` per partition: sizes independent of the
number of rows. Positions of duplicates to drop (keep_first) stay in the object store for the read stage.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from internvl_batch.config import StorageConfig
from internvl_batch.done_keys import ResultKeys
from internvl_batch.keys import add_checksums
from internvl_batch.manifest.read import UnitRows
from internvl_batch.manifest.requests import TaskAssigner, unit_chunks
from internvl_batch.manifest.units import ReadUnit

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("position", pa.uint64()),
        ("malformed", pa.bool_()),
        ("keys", pa.int32()),
        ("done", pa.int32()),
        ("found", pa.int32()),
        ("changed", pa.int32()),
        ("stale", pa.int32()),
        ("todo_high", pa.uint64()),
        ("todo_low", pa.uint64()),
    ]
)
log = logging.getLogger("internvl_batch.manifest")
MIXED = "json"  # a pass-through column whose values have several types: carried as JSON text
EXAMPLES = 10


@dataclass
class UnitScan:
    unit: int
    file: str
    rows: int
    blank_lines: int
    rows_with_id_field: int
    passthrough_types: dict[str, object]  # column -> pa.DataType, MIXED, or None (only nulls seen)
    skipped: int = 0  # media roots: objects of no listed kind
    unlisted: int = 0  # media roots: folders that could not be listed, symlink loops
    stale_configs: frozenset[int] = frozenset()  # fingerprint hashes of results the run does not accept


@dataclass
class ScanTotals:
    rows: int = 0
    malformed_rows: int = 0
    keys: int = 0  # results expected: one per (row, task)
    done_keys: int = 0  # of which already in the output
    found_keys: int = 0  # of which have a result (kept or not): the rest of the output's keys are orphans
    changed_keys: int = 0  # of which have a result made from another version of their media
    stale_keys: int = 0  # of which have a result made with a config fingerprint the run does not accept
    todo_rows: int = 0  # rows with at least one key still to do
    todo_rows_by_unit: dict[int, int] = field(default_factory=dict)  # the same, per read unit that has any
    todo_checksum: tuple[int, int] = (0, 0)
    duplicate_ids: int = 0  # ids seen more than once
    duplicate_rows: int = 0  # the extra occurrences
    duplicate_examples: list[str] = field(default_factory=list)

    def __add__(self, other: ScanTotals) -> ScanTotals:
        return ScanTotals(
            self.rows + other.rows,
            self.malformed_rows + other.malformed_rows,
            self.keys + other.keys,
            self.done_keys + other.done_keys,
            self.found_keys + other.found_keys,
            self.changed_keys + other.changed_keys,
            self.stale_keys + other.stale_keys,
            self.todo_rows + other.todo_rows,
            {
                u: self.todo_rows_by_unit.get(u, 0) + other.todo_rows_by_unit.get(u, 0)
                for u in self.todo_rows_by_unit.keys() | other.todo_rows_by_unit.keys()
            },
            add_checksums(self.todo_checksum, other.todo_checksum),
            self.duplicate_ids + other.duplicate_ids,
            self.duplicate_rows + other.duplicate_rows,
            sorted(self.duplicate_examples + other.duplicate_examples)[:EXAMPLES],
        )

    @property
    def todo_keys(self) -> int:
        return self.keys - self.done_keys


def partition_of(ids: list[str], partitions: int) -> np.ndarray:
    if partitions == 1:
        return np.zeros(len(ids), np.int64)
    return np.fromiter((zlib.crc32(i.encode()) for i in ids), np.int64, len(ids)) % partitions


def scan_unit(
    unit: ReadUnit,
    storage: StorageConfig,
    assigner: TaskAssigner,
    done_keys: ResultKeys | None,
    passthrough: list[str],
    partitions: int,
) -> tuple[UnitScan, list[pa.Table], np.ndarray]:
    """Read one unit; return its counts, its per-row records split into `partitions` tables, and the indices
    in `done_keys` of the results its rows have (sorted, distinct: what the orphan count leaves out)."""
    source = UnitRows(unit, storage)
    tables: list[list[pa.Table]] = [[] for _ in range(partitions)]
    values: dict[str, list] = {name: [] for name in passthrough}
    rows = 0
    stale_configs: set[int] = set()
    found: list[np.ndarray] = [np.zeros(0, np.int64)]
    for chunk in unit_chunks(unit, storage, assigner, done_keys, source):
        rows += len(chunk.rows)
        todo = np.where(chunk.done[:, None], np.uint64(0), chunk.hashes)
        sums = np.add.reduceat(todo, chunk.starts[:-1], axis=0) if len(todo) else np.zeros((0, 2), np.uint64)
        per_row = {
            name: np.add.reduceat(flags.astype(np.int32), chunk.starts[:-1]) if len(todo) else np.zeros(0, np.int32)
            for name, flags in (
                ("done", chunk.done),
                ("found", chunk.found),
                ("changed", chunk.changed),
                ("stale", chunk.stale),
            )
        }
        stale_configs |= chunk.stale_configs
        if chunk.found_index is not None:
            found.append(chunk.found_index[chunk.found_index >= 0])
        ids = [row.id for row in chunk.rows]
        records = pa.table(
            [
                pa.array(ids, pa.string()),
                pa.array(chunk.positions, pa.uint64()),
                pa.array([row.error is not None and row.error.startswith("manifest:") for row in chunk.rows]),
                pa.array(np.diff(chunk.starts).astype(np.int32)),
                *(pa.array(np.asarray(per_row[name], np.int32)) for name in ("done", "found", "changed", "stale")),
                pa.array(sums[:, 0]),
                pa.array(sums[:, 1]),
            ],
            schema=RECORD_SCHEMA,
        )
        parts = partition_of(ids, partitions)
        for p in range(partitions):
            tables[p].append(records if partitions == 1 else records.filter(pa.array(parts == p)))
        for name in passthrough:
            values[name] += [raw.get(name) if isinstance(raw, dict) else None for raw in chunk.raws]
    scan = UnitScan(
        unit.index,
        unit.file.uri,
        rows,
        source.blank_lines,
        source.rows_with_id_field,
        {name: value_type(v) for name, v in values.items()},
        source.counts.skipped,
        source.counts.unlisted,
        frozenset(stale_configs),
    )
    tables = [pa.concat_tables(t) if t else RECORD_SCHEMA.empty_table() for t in tables]
    return scan, tables, np.unique(np.concatenate(found))


def value_type(values: list):
    if all(v is None for v in values):
        return None
    try:
        return pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return MIXED


def unify_types(types: list) -> object:
    """One type for a pass-through column across units: the common type, a numeric promotion, or MIXED."""
    seen = [t for t in types if t is not None]
    if not seen:
        return None
    if MIXED in seen:
        return MIXED
    try:
        schema = pa.unify_schemas([pa.schema([("c", t)]) for t in seen], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError):
        return MIXED
    unified = schema.field("c").type
    return MIXED if pa.types.is_string(unified) and not all(pa.types.is_string(t) for t in seen) else unified


def reduce_partition(*tables: pa.Table) -> tuple[ScanTotals, np.ndarray]:
    """Totals over one partition's rows, duplicates found by real id; returns the sorted positions of the
    rows to drop (every occurrence of an id after its first, in manifest order)."""
    table = pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()
    totals = ScanTotals()
    drop = np.zeros(0, np.uint64)
    if table.num_rows:
        counts = table.group_by("id").aggregate([("id", "count")])
        repeated = counts.filter(pc.greater(counts.column("id_count"), 1))
        if repeated.num_rows:
            dups = table.filter(pc.is_in(table.column("id"), repeated.column("id")))
            dups = dups.sort_by([("id", "ascending"), ("position", "ascending")])
            ids = dups.column("id").to_pylist()
            later = np.array([i > 0 and ids[i] == ids[i - 1] for i in range(len(ids))], bool)
            drop = np.sort(dups.column("position").to_numpy()[later])
            table = table.filter(pc.invert(pc.is_in(table.column("position"), pa.array(drop))))
            names = sorted(repeated.column("id").to_pylist())
            totals.duplicate_ids, totals.duplicate_rows = len(names), len(drop)
            totals.duplicate_examples = names[:EXAMPLES]
        totals.rows = table.num_rows
        totals.malformed_rows = pc.sum(table.column("malformed").cast(pa.int64())).as_py() or 0
        totals.keys = pc.sum(table.column("keys")).as_py() or 0
        totals.done_keys = pc.sum(table.column("done")).as_py() or 0
        totals.found_keys = pc.sum(table.column("found")).as_py() or 0
        totals.changed_keys = pc.sum(table.column("changed")).as_py() or 0
        totals.stale_keys = pc.sum(table.column("stale")).as_py() or 0
        todo = table.filter(pc.less(table.column("done"), table.column("keys")))
        totals.todo_rows = todo.num_rows
        units, counts = np.unique(todo.column("position").to_numpy() >> np.uint64(32), return_counts=True)
        totals.todo_rows_by_unit = {int(u): int(c) for u, c in zip(units, counts)}
        totals.todo_checksum = (
            int(table.column("todo_high").to_numpy().sum(dtype=np.uint64)),
            int(table.column("todo_low").to_numpy().sum(dtype=np.uint64)),
        )
    return totals, drop


def plan_waves(units: list[ReadUnit], totals: ScanTotals, wave_rows: int) -> list[tuple[list[ReadUnit], int]]:
    """Consecutive units with rows to do, grouped into waves of about `wave_rows` rows to do (a unit is never
    split); units with nothing to do are left out, so a rerun does not read them again. (units, rows) each."""
    waves: list[tuple[list[ReadUnit], int]] = []
    current, rows = [], 0
    for unit in units:
        todo = totals.todo_rows_by_unit.get(unit.index, 0)
        if not todo:
            continue
        if current and rows + todo > wave_rows:
            waves.append((current, rows))
            current, rows = [], 0
        current.append(unit)
        rows += todo
    if current:
        waves.append((current, rows))
    return waves


def merge_positions(*arrays: np.ndarray) -> np.ndarray:
    return np.sort(np.concatenate(arrays)) if arrays else np.zeros(0, np.uint64)
