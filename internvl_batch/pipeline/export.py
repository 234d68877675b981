"""Exports on Ray: `export/run.py`'s steps as Ray tasks, for outputs larger than one process should read.

Per chunk of result files a split task (its rows, one block per partition of the document id); per partition
an export task (the partition's current rows made into items, written as its own shards
`<stem>-<partition>-<k><suffix>`, or text files). The driver holds file names, counts and the labels of the
Label Studio config (at most `options.MAX_LABELS`), never rows. `export_output` picks this or the one-process
path.
"""

from __future__ import annotations

import ray

from internvl_batch.export.formats import format_named
from internvl_batch.export.options import SHOWN_FILES, ExportCounts, ExportOptions
from internvl_batch.export.rows import split_chunk
from internvl_batch.export.run import export_partition, finish, local_export, prepare
from internvl_batch.export.writers import ShardWriter
from internvl_batch.pipeline.calls import get, remote
from internvl_batch.pipeline.compaction import result_bytes

LOCAL_MAX_BYTES = 1 << 30  # result files (bytes on storage) up to which an export runs in this process


def _split(output_path, options, first, files, partitions, task):
    parts = split_chunk(output_path, options.storage, first, files, partitions, task)
    return parts[0] if len(parts) == 1 else tuple(parts)


def _export(fmt, options, orphans, partition, *tables) -> ExportCounts:
    writer = None
    if fmt.encoder is not None:
        writer = ShardWriter(options.out, options.storage, fmt.encoder(options), options.max_items_per_file, partition)
    counts = export_partition(fmt, list(tables), options, orphans, writer)
    if writer is not None:
        files = writer.close()
        counts.counts["files"] += len(files)
        counts.files = files[:SHOWN_FILES]
    return counts


def ray_export(output_path: str, options: ExportOptions) -> ExportCounts:
    """The export as Ray tasks (Ray must be initialised)."""
    fmt, chunks, partitions, _, orphans = prepare(output_path, options)
    task = options.task if fmt.by_task else None
    split = remote(_split, num_returns=partitions)
    parts = [split.remote(output_path, options, first, files, partitions, task) for first, files in chunks]
    parts = [p if isinstance(p, list) else [p] for p in parts]  # Ray returns one ref for num_returns=1
    orphans_ref = ray.put(orphans)
    export = remote(_export)
    counts = get([export.remote(fmt, options, orphans_ref, p, *[c[p] for c in parts]) for p in range(partitions)])
    total = ExportCounts()
    for part in counts:
        total = total + part
    return total


def export_output(output_path: str, options: ExportOptions, engine: str = "auto", address: str | None = None) -> dict:
    """Export the current rows of the job's output at `output_path` as `options` say (`export/`); returns the
    summary (format, out, items, boxes, files, error_rows, skipped_<reason>, first_files, ...). `engine`:
    "local" (this process), "ray" (Ray tasks: the cluster this process is connected to, else `address`, else
    RAY_ADDRESS, else a new local one, shut down after) or "auto" (Ray above LOCAL_MAX_BYTES of result files).
    Raises ConfigError for a bad option, a path without results, or an earlier export at `options.out`."""
    fmt = format_named(options.format)
    size = 0 if engine == "local" else result_bytes(output_path, options.storage)
    if engine == "local" or (engine == "auto" and size <= LOCAL_MAX_BYTES):
        return finish(fmt, options, local_export(output_path, options))
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, log_to_driver=False)
    try:
        return finish(fmt, options, ray_export(output_path, options))
    finally:
        if started:
            ray.shutdown()
