"""Orphans: results whose (id, task) no input row had in the latest run that scanned the output (an object
deleted from a media root, a row removed from a manifest). Nothing is deleted: the run records their keys in
`.internvl-batch/orphans.arrow` (128-bit key hashes, `keys.key_hashes`; a PDF's under its document's key; an
Arrow IPC file, not Parquet, so that a reader's `OUT/**/*.parquet` glob never takes it for results; no file
when there are none),
the summary counts them (`results_orphaned`), and readers may leave them out (`read_results(...,
drop_orphans=True)`, `results_dataset`, `compact`).
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from internvl_batch.config import StorageConfig
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.keys import KeySet, document_ids, key_hashes
from internvl_batch.output_dir import write_output_file
from internvl_batch.output_layout import orphans_path


def write_orphan_keys(output_path: str, storage: StorageConfig, hashes: np.ndarray, run_id: str) -> None:
    """Replace the orphans file with these key hashes (uint64 [n, 2]), found by run `run_id` (none: remove it)."""
    if not len(hashes):
        clear_orphan_keys(output_path, storage)
        return
    table = pa.table({"key_high": pa.array(hashes[:, 0], pa.uint64()), "key_low": pa.array(hashes[:, 1], pa.uint64())})
    table = table.replace_schema_metadata({"run_id": run_id})
    buf = io.BytesIO()
    with pa.ipc.new_file(buf, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    write_output_file(orphans_path(output_path), storage, buf.getvalue())


def orphan_keys(output_path: str, storage: StorageConfig | None = None) -> KeySet:
    """The keys the latest scan found orphaned (empty when it found none, or no run has scanned yet)."""
    fs, _ = fsspec_filesystem(output_path, storage or StorageConfig())
    _, path = fsspec_filesystem(orphans_path(output_path), storage or StorageConfig())
    try:
        with fs.open(path, "rb") as f:
            table = pa.ipc.open_file(pa.BufferReader(f.read())).read_all()
    except FileNotFoundError:
        return KeySet.build([])
    hashes = np.stack([table.column("key_high").to_numpy(), table.column("key_low").to_numpy()], axis=1)
    return KeySet.build([hashes.astype(np.uint64)])


def orphaned(table: pa.Table, keys: KeySet) -> np.ndarray:
    """Per result row (`id`, `task`, and `page` when present): whether its key is among `keys` (a page row's:
    its document's key)."""
    if not len(keys) or not table.num_rows:
        return np.zeros(table.num_rows, bool)
    ids, tasks = table.column("id").to_pylist(), table.column("task").to_pylist()
    if "page" in table.column_names:
        pages = table.column("page").to_pylist()
        ids = [i if p is None else document_ids([i], [p])[0] for i, p in zip(ids, pages)]
    return keys.contains(key_hashes([i or "" for i in ids], [t or "" for t in tasks]))


def clear_orphan_keys(output_path: str, storage: StorageConfig) -> None:
    """Remove the orphans file (a run that found no earlier results: none of its keys may hide a new row)."""
    fs, path = fsspec_filesystem(orphans_path(output_path), storage)
    if fs.exists(path):
        fs.rm(path)
