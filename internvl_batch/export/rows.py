"""The rows an export reads: the output's current rows, in partitions by document id, never all at once.

An export groups rows (a Label Studio task or COCO image is one id's rows of every task; a document is its
pages' rows), and the rows of one group may lie in files of several runs. So rows are read a chunk of files at
a time (`split_chunk`: the columns the exports use, each row's file number), cut into `partitions` by a hash of
the row's document id (a page row's document, else its own id), and each partition, which then holds every row
of its groups and of their keys, gets the current-row rule of `read_results` (`partition_rows`) and is made
into items a slice of whole groups at a time (`group_slices`). A partition is about PARTITION_ROWS rows or
PARTITION_BYTES in memory, a chunk CHUNK_ROWS or CHUNK_BYTES, estimated from a sample of footers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

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
PARTITION_BYTES = 128 << 20  # rows in memory (Arrow, uncompressed) per partition, about
PARTITION_ROWS = 100_000  # and rows per partition, about (whichever gives more partitions)
CHUNK_BYTES = 256 << 20  # rows in memory read by one step at a time, about
CHUNK_ROWS = 500_000
SLICE_ROWS = 20_000  # rows made into items at a time (Python objects: a slice's, not a partition's)
MAX_PARTITIONS = 4096
SAMPLED_FOOTERS = 16  # result files whose footers say how much larger than on storage the rows are in memory


def plan_chunks(output_path: str, storage: StorageConfig) -> tuple[list[tuple[int, list[str]]], int, int]:
    """(chunks: (number of the first file, result files) in name order, partitions, bytes of result files on
    storage). Sizes are estimated from the files' sizes on storage and, in a sample of footers, the rows and
    uncompressed bytes per stored byte (compression of answers varies tenfold)."""
    fs, path = fsspec_filesystem(output_path, storage)
    listing = list_output(fs, path)
    if not listing.exists:
        raise ConfigError(f"no output at {output_path}")
    files = listing.result_files
    if not files:
        raise ConfigError(f"output {output_path} has no result files to export: {listing.describe()}")
    sizes = {i["name"]: i.get("size") or 0 for folder in listing.folders.values() for i in folder.values()}
    per_byte = _per_stored_byte(fs, files, sizes)  # (uncompressed bytes, rows)
    chunks, size, total = [], 0.0, 0
    for number, file in enumerate(files):
        grow = sizes.get(file, 0) * max(per_byte[0] / CHUNK_BYTES, per_byte[1] / CHUNK_ROWS)
        if not chunks or size + grow > 1:
            chunks.append((number, []))
            size = 0.0
        chunks[-1][1].append(file)
        size, total = size + grow, total + sizes.get(file, 0)
    parts = math.ceil(total * max(per_byte[0] / PARTITION_BYTES, per_byte[1] / PARTITION_ROWS))
    return chunks, max(1, min(MAX_PARTITIONS, parts)), total


def _per_stored_byte(fs, files: list[str], sizes: dict) -> tuple[float, float]:
    """(uncompressed bytes (the footers' row group sizes, at least 1), rows) per byte on storage, in up to
    SAMPLED_FOOTERS files spread evenly over `files`."""
    step = max(1, len(files) // SAMPLED_FOOTERS)
    stored = memory = rows = 0
    for file in files[::step][:SAMPLED_FOOTERS]:
        with fs.open(file, "rb") as f:
            meta = pq.ParquetFile(f).metadata
        memory += sum(meta.row_group(k).total_byte_size for k in range(meta.num_row_groups))
        rows += meta.num_rows
        stored += sizes.get(file, 0)
    return (max(1.0, memory / stored), rows / stored) if stored else (1.0, 0.0)


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
    parts = partition_of(_groups(table), partitions)
    return [table.filter(pa.array(parts == p)) for p in range(partitions)]


def partition_rows(tables: list[pa.Table], orphans: KeySet | None = None) -> pa.Table:
    """One partition's rows (from every chunk) -> its current rows (`results.current_rows`), sorted by group
    (document id, else id), task and page, with the group in `_group`: a group's rows are next to each other."""
    table = current_rows(pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table(), orphans)
    table = table.drop_columns(["_file"]).append_column("_group", pa.array(_groups(table), pa.string()))
    return table.sort_by([("_group", "ascending"), ("task", "ascending"), ("page", "ascending")])


def _groups(table: pa.Table) -> list[str]:
    """Per row: its document's id (a page row) or its own id."""
    ids, pages = table.column("id").fill_null("").to_pylist(), table.column("page").to_pylist()
    return [i if p is None else document_ids([i], [p])[0] for i, p in zip(ids, pages)]


def group_slices(table: pa.Table, rows: int | None = None) -> Iterator[pa.Table]:
    """`partition_rows`' table in slices of about `rows` (default SLICE_ROWS) rows, each cut where a group ends
    (a group larger than that is one slice)."""
    rows = rows or SLICE_ROWS
    groups = table.column("_group")
    start = 0
    while start < table.num_rows:
        stop = min(start + rows, table.num_rows)
        if stop < table.num_rows:
            last = groups[stop - 1]
            while stop < table.num_rows and groups[stop] == last:
                stop += 1
        yield table.slice(start, stop - start)
        start = stop
