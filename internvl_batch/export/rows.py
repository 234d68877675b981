"""The rows an export reads: the output's current rows, in partitions by document id, never all at once.

An export groups rows (a Label Studio task or COCO image is one id's rows of every task; a document is its
pages' rows), and the rows of one group may lie in files of several runs. So rows are read a chunk of files at
a time (`split_chunk`: the columns the exports use, each row's file number), cut into `partitions` by a hash of
the row's document id (a page row's document, else its own id), and each partition, which then holds every row
of its groups and of their keys, gets the current-row rule of `read_results` (`partition_rows`). A partition is
about PARTITION_BYTES of result files on storage.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.keys import KeySet, document_ids
from internvl_batch.manifest.scan import partition_of
from internvl_batch.output_dir import list_output
from internvl_batch.output_schema import OUTPUT_SCHEMA
from internvl_batch.results import current_rows

EXPORT_COLUMNS = (
    "id",
    "task",
    "status",
    "response",
    "media",
    "media_sizes",
    "boxes",
    "page",
    "num_pages",
    "num_frames",
    "error",
    "model",
    "run_id",
    "config_fingerprint",
)
ROW_SCHEMA = pa.schema([OUTPUT_SCHEMA.field(name) for name in EXPORT_COLUMNS] + [("_file", pa.int32())])
PARTITION_BYTES = 64 << 20  # result files on storage per partition
CHUNK_BYTES = 256 << 20  # result files on storage read by one step at a time
MAX_PARTITIONS = 4096


def plan_chunks(output_path: str, storage: StorageConfig) -> tuple[list[tuple[int, list[str]]], int, int]:
    """(chunks: (number of the first file, result files) in name order, partitions, bytes of result files)."""
    fs, path = fsspec_filesystem(output_path, storage)
    listing = list_output(fs, path)
    if not listing.exists:
        raise ConfigError(f"no output at {output_path}")
    files = listing.result_files
    if not files:
        raise ConfigError(f"output {output_path} has no result files to export: {listing.describe()}")
    sizes = {i["name"]: i.get("size") or 0 for folder in listing.folders.values() for i in folder.values()}
    chunks, size, total = [], 0, 0
    for number, file in enumerate(files):
        grow = sizes.get(file, 0)
        if not chunks or size + grow > CHUNK_BYTES:
            chunks.append((number, []))
            size = 0
        chunks[-1][1].append(file)
        size, total = size + grow, total + grow
    return chunks, max(1, min(MAX_PARTITIONS, math.ceil(total / PARTITION_BYTES))), total


def split_chunk(
    output_path: str, storage: StorageConfig, first: int, files: list[str], partitions: int, task: str | None = None
) -> list[pa.Table]:
    """A chunk's rows (ROW_SCHEMA; only `task`'s when given), one table per partition of the document id."""
    fs, _ = fsspec_filesystem(output_path, storage)
    tables = []
    for number, file in enumerate(files, start=first):
        with fs.open(file, "rb") as f:
            parquet = pq.ParquetFile(f)
            table = parquet.read(columns=[c for c in EXPORT_COLUMNS if c in parquet.schema_arrow.names])
        if task is not None:
            table = table.filter(pc.equal(table.column("task"), task).fill_null(False))
        columns = [
            table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
            for f in ROW_SCHEMA
            if f.name != "_file"
        ]
        tables.append(pa.table([*columns, pa.array([number] * len(table), pa.int32())], schema=ROW_SCHEMA))
    table = pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table()
    if partitions == 1:
        return [table]
    ids, pages = table.column("id").fill_null("").to_pylist(), table.column("page").to_pylist()
    groups = [i if p is None else document_ids([i], [p])[0] for i, p in zip(ids, pages)]
    parts = partition_of(groups, partitions)
    return [table.filter(pa.array(parts == p)) for p in range(partitions)]


def partition_rows(tables: list[pa.Table], orphans: KeySet | None = None) -> pa.Table:
    """One partition's rows (from every chunk) -> its current rows (`results.current_rows`), sorted by id, task."""
    table = pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table()
    return current_rows(table, orphans).drop_columns(["_file"])
