"""Compaction: an output's current rows rewritten as a few large result files sorted by id, atomically.

`compact_output` rewrites exactly the rows `results.read_results` returns (per (id, task) the latest run's row;
the document shape rule `shape_superseded`), each with its own `run_id` and all its columns (schemas unified
permissively: a column a file lacks is null there), as result files of about `target_rows` rows and
`target_bytes` uncompressed bytes, each sorted by (id, task) and holding one id range, named
`part-<C>-<attempt: 4 hex><range: 8 hex>.parquet`: C is the compaction's own run id (its run record, "kind":
"compact", makes them results), and in name order the files give the rows in id order. Superseded rows are gone.

Readers never see a half state (at every instant the current rows are the same set): a new file holds copies of
current rows only, and a copy equals its original, so whichever of the two a reader keeps is the same row; old
files are removed only after every new file is written (the commit: the plan's state "replacing"), in name
order, so that a superseded row never outlives the row that supersedes it (within a run, the later file wins).
The plan (`.internvl-batch/compaction.json`, written atomically) lets a rerun finish a killed compaction: before
the commit, the new files (copies) are removed and the compaction starts again under the same run id; after it,
the old files left are removed. One compaction at a time per output; a job may run meanwhile (its new files are
not in the plan; its rows win by run id). Plain Parquet readers of `data/` see duplicates of current rows while
a compaction runs (as they see superseded rows at any other time), and exactly the current rows after it.

The work is steps on chunks of old files (`survey`, `select`, `split`) and on id ranges (`write_range`), run in
this process by `local_rewrite` (it holds the current rows at once: small outputs) or as Ray tasks by
`pipeline/compaction.py` (a task holds a chunk of old files, or one new file).
"""

from __future__ import annotations

import io
import math
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from internvl_batch.compact_plan import finish_plan, pause, read_plan, write_plan, written_by
from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.keys import KeySet
from internvl_batch.orphans import orphan_keys, orphaned
from internvl_batch.output_dir import (
    check_output_location,
    data_path,
    list_output,
    migrate_legacy_output,
    new_run_id,
    record_run,
    write_output_file,
)
from internvl_batch.output_layout import DATA_DIR, TOP
from internvl_batch.results import RECORD_SCHEMA, read_result_file, result_records, superseded_positions

TARGET_ROWS = 1_000_000
TARGET_BYTES = 512 << 20  # uncompressed, as the files' footers count them
CHUNK_BYTES = 256 << 20  # old files (bytes on storage) per task of the survey and split steps
CHUNK_FILES = 256
ROW_GROUP_ROWS = 128 * 1024  # several row groups per new file: readers split a file by them
SAMPLES = 1024  # ids sampled per partition to place the id ranges' boundaries
ROW_BITS = np.uint64(0xFFFFFFFF)  # the row's part of a position (`results.result_records`)


@dataclass(frozen=True)
class Work:
    """One compaction's rewrite: what its steps need (picklable, for Ray tasks). A rewrite (`local_rewrite`,
    `pipeline.compaction.ray_rewrite`) turns it into (names of the new files, in id order; rows kept; rows)."""

    output_path: str
    storage: StorageConfig
    run_id: str
    attempt: str  # 4 hex: the names of two attempts of one compaction differ
    chunks: list[tuple[int, list[str]]]  # (number of its first file, old files) per task, in name order
    target_rows: int
    target_bytes: int
    orphans: KeySet | None = None  # keys of results to leave out (`orphans.orphan_keys`), or None


Rewrite = Callable[[Work], tuple[list[str], int, int]]


def survey(work: Work, first: int, files: list[str], partitions: int) -> tuple[tuple, list[pa.Table]]:
    """A chunk's footers, (schema, rows, uncompressed bytes), and its rows' records (id, task, run_id, page,
    position: `results.result_records`) by hash partition of the (document) id."""
    fs, _ = fsspec_filesystem(work.output_path, work.storage)
    schemas, rows, size = [], 0, 0
    for file in files:
        with fs.open(file, "rb") as f:
            parquet = pq.ParquetFile(f)
            meta = parquet.metadata
            schemas.append(parquet.schema_arrow)
            rows += meta.num_rows
            size += sum(meta.row_group(k).total_byte_size for k in range(meta.num_row_groups))
    footers = (unify(schemas), rows, size)
    return footers, result_records(work.output_path, files, first, work.storage, partitions)


def unify(schemas: list[pa.Schema]) -> pa.Schema:
    return pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])


def rows_to_drop(tables: list[pa.Table], orphans: KeySet | None = None) -> np.ndarray:
    """The row selection, in one place: the positions (sorted) of the records' rows that compaction leaves out,
    those that are not current as `read_results` decides (a later run's row of the key, or of the key's document
    in the other shape), and with `orphans` the rows of those keys."""
    # superseded_positions keeps the highest position of a key's rows of one run; read_results (a stable sort)
    # keeps the last file's first row: flipping the row bits of the positions makes the two agree.
    at = RECORD_SCHEMA.get_field_index("position")
    flipped = [t.set_column(at, "position", pa.array(t["position"].to_numpy() ^ ROW_BITS)) for t in tables]
    drop = np.sort(superseded_positions(flipped) ^ ROW_BITS)
    if orphans is not None and len(orphans) and tables:
        records = pa.concat_tables(tables)
        drop = np.union1d(drop, records["position"].to_numpy()[orphaned(records, orphans)]).astype(np.uint64)
    return drop


def select(tables: list[pa.Table], orphans: KeySet | None = None) -> tuple[np.ndarray, int, list[str]]:
    """One partition's records -> (positions of the rows to drop (sorted), rows kept, up to SAMPLES kept ids
    evenly spaced in sorted order)."""
    drop = rows_to_drop(tables, orphans)
    records = pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()
    kept = records["id"].filter(pa.array(~np.isin(records["position"].to_numpy(), drop))).fill_null("")
    kept, count = kept.take(pc.sort_indices(kept)), min(SAMPLES, len(kept))
    return drop, len(kept), kept.take(pa.array(np.arange(count) * len(kept) // max(count, 1))).to_pylist()


def boundaries(samples: list[tuple[int, list[str]]], ranges: int) -> list[str]:
    """Ids that cut the kept rows into `ranges` id ranges of about equal rows, from each partition's (rows
    kept, sampled ids); a range holds the ids >= its lower boundary and < its upper one."""
    points = sorted((i, kept / len(ids)) for kept, ids in samples if ids for i in ids)
    if ranges < 2 or not points:
        return []
    weights = np.cumsum([w for _, w in points])
    at = np.searchsorted(weights, weights[-1] * np.arange(1, ranges) / ranges)
    return sorted({points[min(k, len(points) - 1)][0] for k in at})


def range_count(kept: int, rows: int, size: int, work: Work) -> int:
    """How many new files: enough for at most about `target_rows` and `target_bytes` each."""
    estimate = size * kept / rows if rows else 0
    return max(1, math.ceil(kept / work.target_rows), math.ceil(estimate / work.target_bytes))


def split(work: Work, first: int, files: list[str], drop: np.ndarray, cuts: list[str], schema) -> list[pa.Table]:
    """A chunk's kept rows in the unified schema, one table per id range (len(cuts) + 1). `drop`: positions to
    leave out (at least those of this chunk), sorted."""
    number = range(first, first + len(files))
    tables = [
        conform(read_result_file(work.output_path, f, n, work.storage, drop), schema) for n, f in zip(number, files)
    ]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    ids = table["id"].fill_null("").to_numpy(zero_copy_only=False)
    ranges = np.searchsorted(np.array(cuts, dtype=object), ids, side="right") if cuts else np.zeros(len(ids), int)
    table = table.take(pa.array(np.argsort(ranges, kind="stable")))
    ends = np.cumsum(np.bincount(ranges, minlength=len(cuts) + 1))
    return [table.slice(end - count, count) for end, count in zip(ends, np.diff(ends, prepend=0))]


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` in `schema`: its columns cast, the columns it lacks null (files from before a column existed)."""
    return pa.table(
        [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type) for f in schema],
        schema=schema,
    )


def write_range(work: Work, index: int, tables: list[pa.Table], schema: pa.Schema) -> tuple[str | None, int]:
    """One new result file: an id range's rows (from every chunk), sorted by (id, task); (its name, rows), or
    (None, 0) for a range without rows."""
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if not len(table):
        return None, 0
    table = table.sort_by([("id", "ascending"), ("task", "ascending")])
    name = f"part-{work.run_id}-{work.attempt}{index:08x}.parquet"
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    write_output_file(f"{data_path(work.output_path)}/{name}", work.storage, buf.getvalue())
    return name, len(table)


def local_rewrite(work: Work) -> tuple[list[str], int, int]:
    """The rewrite in this process (the steps `pipeline/compaction.py` runs as Ray tasks)."""
    surveyed = [survey(work, first, files, 1) for first, files in work.chunks]
    schema = unify([s[0][0] for s in surveyed])
    rows, size = sum(s[0][1] for s in surveyed), sum(s[0][2] for s in surveyed)
    drop, kept, sample = select([s[1][0] for s in surveyed], work.orphans)
    cuts = boundaries([(kept, sample)], range_count(kept, rows, size, work))
    parts = [split(work, first, files, drop, cuts, schema) for first, files in work.chunks]
    names = []
    for index in range(len(cuts) + 1):
        name, _ = write_range(work, index, [p[index] for p in parts], schema)
        if name:
            names.append(name)
            pause("written")
    return names, kept, rows


def compact_output(
    output_path: str,
    storage: StorageConfig | None = None,
    target_rows: int = TARGET_ROWS,
    target_bytes: int = TARGET_BYTES,
    rewrite: Rewrite | None = None,
    drop_orphans: bool = False,
) -> dict:
    """Compact the output at `output_path` (see the module's docstring), or finish a compaction that was cut
    short there; returns its summary (run_id, files_before, files_after, rows_kept, rows_dropped). `rewrite`:
    `local_rewrite` by default, or the Ray one (`pipeline.compaction.ray_rewrite`); `drop_orphans`: leave out
    the results whose input the latest job run no longer had (`orphans.py`; counted in rows_dropped). Raises ConfigError for a
    path that holds no output or no result files."""
    storage = storage or StorageConfig()
    if target_rows < 1 or target_bytes < 1:
        raise ConfigError("the target rows and bytes per file must be at least 1")
    check_output_location(output_path)
    fs, path = fsspec_filesystem(output_path, storage)
    listing = list_output(fs, path)
    if not listing.exists:
        raise ConfigError(f"no output at {output_path}")
    plan = read_plan(fs, path)
    if plan and plan["state"] == "replacing":  # killed after its commit: only removals are left
        return finish_plan(fs, path, output_path, storage, plan)
    run_id = plan["run_id"] if plan else new_run_id()
    if plan:  # killed before its commit: its new files are copies of current rows, removed before starting again
        mine = [info["name"] for n, info in listing.folders.get(DATA_DIR, {}).items() if written_by(n, run_id)]
        if mine:
            fs.rm(mine)
    if listing.is_legacy:
        migrate_legacy_output(fs, path, listing, output_path)
    listing = list_output(fs, path)
    files = listing.result_files
    if not files:
        raise ConfigError(f"output {output_path} has no result files to compact: {listing.describe()}")
    where = {
        info["name"]: (folder, info) for folder in (TOP, DATA_DIR) for info in listing.folders.get(folder, {}).values()
    }
    started = datetime.now(timezone.utc).isoformat()
    record = {"run_id": run_id, "kind": "compact", "status": "running", "started_at": started, "rows_processed": 0}
    # First the record: new files are read as results only once their run is recorded.
    record_run(output_path, storage, record)
    old = [f"{where[f][0]}/{posixpath.basename(f)}".lstrip("/") for f in files]
    write_plan(output_path, storage, {"run_id": run_id, "state": "writing", "old": old, "record": record})
    orphans = orphan_keys(output_path, storage) if drop_orphans else None
    chunks = _chunks(files, where)
    work = Work(output_path, storage, run_id, uuid.uuid4().hex[:4], chunks, target_rows, target_bytes, orphans)
    names, kept, rows = (rewrite or local_rewrite)(work)
    plan = {"run_id": run_id, "state": "replacing", "old": old, "record": record, "new": names}
    plan.update(rows_kept=kept, rows_dropped=rows - kept)
    write_plan(output_path, storage, plan)  # the commit: from here on a rerun only removes the old files
    return finish_plan(fs, path, output_path, storage, plan)


def _chunks(files: list[str], where: dict) -> list[tuple[int, list[str]]]:
    """Old files in runs of at most CHUNK_BYTES (a larger file alone) and CHUNK_FILES, numbered in name order."""
    chunks, size = [], 0
    for number, file in enumerate(files):
        grow = where[file][1].get("size") or 0
        if not chunks or size + grow > CHUNK_BYTES or len(chunks[-1][1]) >= CHUNK_FILES:
            chunks.append((number, []))
            size = 0
        chunks[-1][1].append(file)
        size += grow
    return chunks
