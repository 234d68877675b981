"""Compaction on Ray: `compact.py`'s steps as Ray tasks, for outputs larger than one process holds.

`compact.compact_output` runs the protocol (run record, plan, commit, removals); `ray_rewrite` is its rewrite:
per chunk of old files a survey task (footers; records by id partition), per partition a select task (the
positions to drop, cut per chunk; rows kept; sampled ids), on the driver the boundaries of the id ranges (a
few ids), per chunk a split task (its kept rows, one block per id range), per id range a write task (one new
file). The driver holds file names, footer summaries and id samples, never rows; a task holds one chunk of
old files, one partition's records or one new file. Ray's object store holds chunks x (partitions + ranges)
objects while it runs (a limit for outputs of tens of thousands of chunks).
"""

from __future__ import annotations

import numpy as np
import ray

from internvl_batch.compact import (
    TARGET_BYTES,
    TARGET_ROWS,
    Work,
    boundaries,
    compact_output,
    range_count,
    select,
    split,
    survey,
    unify,
    write_range,
)
from internvl_batch.config import StorageConfig
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.output_dir import list_output
from internvl_batch.pipeline.calls import get, remote
from internvl_batch.pipeline.prepass import MAX_PARTITIONS

LOCAL_MAX_BYTES = 1 << 30  # result files (bytes on storage) up to which `compact` runs in this process


def _refs(refs) -> list:
    return refs if isinstance(refs, list) else [refs]  # Ray returns one ref, not a list, for num_returns=1


def _values(values: list):
    return values[0] if len(values) == 1 else tuple(values)


def _survey(work, first, files, partitions):
    footers, tables = survey(work, first, files, partitions)
    return (footers, *tables)


def _select(bounds, orphans, *tables):
    """One partition: (rows kept, sampled ids), then the positions to drop of each chunk (`bounds`: the first
    position of each chunk, and the end)."""
    drop, kept, sample = select(list(tables), orphans)
    cut = np.searchsorted(drop, bounds)
    return ((kept, sample), *[drop[a:b] for a, b in zip(cut[:-1], cut[1:])])


def _split(work, first, files, cuts, schema, *drops):
    # Each partition's positions are sorted, their concatenation is not: `read_result_file` searches a sorted array.
    return _values(split(work, first, files, np.sort(np.concatenate(drops)), cuts, schema))


def _write(work, index, schema, *tables):
    return write_range(work, index, list(tables), schema)


def ray_rewrite(work: Work) -> tuple[list[str], int, int]:
    """`compact.local_rewrite`'s steps as Ray tasks (Ray must be initialised)."""
    chunks = work.chunks
    partitions = max(1, min(MAX_PARTITIONS, len(chunks)))
    survey_task = remote(_survey, num_returns=partitions + 1)
    surveyed = [survey_task.remote(work, first, files, partitions) for first, files in chunks]
    footers = get([s[0] for s in surveyed])
    schema = unify([f[0] for f in footers])
    rows, size = sum(f[1] for f in footers), sum(f[2] for f in footers)
    end = chunks[-1][0] + len(chunks[-1][1])
    bounds = np.array([first << 32 for first, _ in chunks] + [end << 32], np.uint64)
    select_task = remote(_select, num_returns=len(chunks) + 1)
    orphans = ray.put(work.orphans)
    selected = [select_task.remote(bounds, orphans, *[s[1 + p] for s in surveyed]) for p in range(partitions)]
    samples = get([s[0] for s in selected])
    kept = sum(count for count, _ in samples)
    cuts = boundaries(samples, range_count(kept, rows, size, work))
    split_task = remote(_split, num_returns=len(cuts) + 1)
    parts = [
        _refs(split_task.remote(work, first, files, cuts, schema, *[s[1 + c] for s in selected]))
        for c, (first, files) in enumerate(chunks)
    ]
    write_task = remote(_write)
    written = get([write_task.remote(work, r, schema, *[p[r] for p in parts]) for r in range(len(cuts) + 1)])
    return [name for name, _ in written if name], kept, rows


def result_bytes(output_path: str, storage: StorageConfig) -> int:
    """The size of the output's result files on storage (0 where there is no output)."""
    fs, path = fsspec_filesystem(output_path, storage)
    listing = list_output(fs, path)
    results = set(listing.result_files)
    return sum(i.get("size") or 0 for d in listing.folders.values() for i in d.values() if i["name"] in results)


def compact(
    output_path: str,
    storage: StorageConfig | None = None,
    target_rows: int | None = None,
    target_bytes: int | None = None,
    engine: str = "auto",
    address: str | None = None,
    drop_orphans: bool = False,
) -> dict:
    """`compact.compact_output` in this process (`engine` "local", or "auto" for result files of at most
    `LOCAL_MAX_BYTES` on storage) or on Ray ("ray", or "auto" above that: the cluster this process is
    connected to, else `address`, else RAY_ADDRESS, else a new local one, shut down after). Targets: None for
    `compact.TARGET_ROWS`, `TARGET_BYTES`."""
    storage = storage or StorageConfig()
    target_rows, target_bytes = target_rows or TARGET_ROWS, target_bytes or TARGET_BYTES
    size = 0 if engine == "local" else result_bytes(output_path, storage)  # 0: no output, whose error needs no Ray
    if engine == "local" or size == 0 or (engine == "auto" and size <= LOCAL_MAX_BYTES):
        return compact_output(output_path, storage, target_rows, target_bytes, drop_orphans=drop_orphans)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, log_to_driver=False)
    try:
        return compact_output(output_path, storage, target_rows, target_bytes, ray_rewrite, drop_orphans)
    finally:
        if started:
            ray.shutdown()
