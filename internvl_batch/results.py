"""Result files: written atomically, read back as one current row per (id, task), keys for resume.

Result files (`data/part-<run_id>-<12 hex>.parquet`; see `output_layout.py` for the output's layout, the legacy
one whose result files are read too, and which files are the job's) are written whole or not at all
(`output_dir.write_output_file`), so a reader or a resume never sees half a file. Every row carries its
`run_id`; `read_results` keeps, for each id, the row of the latest run. A PDF that one run read (rows
`<id>#p<n>`) and another could not read at all (one row `<id>`) has rows of two shapes: the later run's shape
wins (`shape_superseded`). Reading never moves or deletes a file (a legacy output is read where it is).
"""

from __future__ import annotations

import io
import re
import uuid
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from internvl_batch.config import StorageConfig
from internvl_batch.documents import DOCUMENT_COLUMNS, documents_table
from internvl_batch.done_keys import text_hashes
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.keys import KeySet, document_ids, key_hashes, page_shares
from internvl_batch.manifest.scan import partition_of
from internvl_batch.orphans import orphan_keys, orphaned
from internvl_batch.output_dir import RUN_ID, data_path, list_output, write_output_file

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("run_id", pa.string()),
        ("page", pa.int32()),
        ("position", pa.uint64()),
    ]
)


def _join(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"


def result_files(output_path: str, storage: StorageConfig) -> list[str]:
    """The job's result files under `output_path`, in either layout (`OutputListing.result_files`): paths in
    the output's filesystem, sorted by name."""
    fs, path = fsspec_filesystem(output_path, storage)
    return list_output(fs, path).result_files


def write_result_file(table: pa.Table, output_path: str, storage: StorageConfig, run_id: str) -> str:
    """Write `table` as one new result file in the output's `data/`, atomically; returns its path (in the
    output's filesystem). `run_id`: from `new_run_id` (the file is named after it, and only names of that form
    are read back as results)."""
    if not re.fullmatch(RUN_ID, run_id or ""):
        raise ValueError(f"run id {run_id!r} is not one new_run_id makes")
    _, path = fsspec_filesystem(output_path, storage)
    name = f"part-{run_id}-{uuid.uuid4().hex[:12]}.parquet"
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_output_file(_join(data_path(output_path), name), storage, buf.getvalue())
    return _join(data_path(path), name)


def read_results(
    output_path: str,
    storage: StorageConfig | None = None,
    columns: list[str] | None = None,
    drop_orphans: bool = False,
    documents: bool = False,
) -> pa.Table:
    """Exactly one current row per (id, task): across files and runs, the row from the latest run wins.

    Works after any sequence of interrupted and resumed runs. `columns` limits what is read (`id`, `task` and
    `run_id` are always read). `drop_orphans`: leave out the results whose input the latest run no longer had
    (`orphans.py`). `documents`: one row per document and task instead (`documents.documents_table`: a PDF's
    pages joined in order, one-image rows as one-page documents; multi-image and video rows left out).
    """
    storage = storage or StorageConfig()
    fs, _ = fsspec_filesystem(output_path, storage)
    files = result_files(output_path, storage)
    if documents:
        columns = None if columns is None else [*columns, *DOCUMENT_COLUMNS]
    wanted = None if columns is None else list(dict.fromkeys(["id", "task", "run_id", "page", *columns]))
    tables = []
    for index, file in enumerate(files):
        table = _read_columns(fs, file, wanted)
        tables.append(table.append_column("_file", pa.array([index] * table.num_rows, pa.int32())))
    if not tables:
        return pa.table({name: pa.array([], pa.string()) for name in ("id", "task", "run_id")})
    orphans = orphan_keys(output_path, storage) if drop_orphans else None
    table = current_rows(pa.concat_tables(tables, promote_options="default"), orphans)
    if documents:
        return documents_table(table)
    if columns is not None and "page" not in columns and "page" in table.column_names:
        table = table.drop_columns(["page"])
    return table.drop_columns(["_file"])


def current_rows(table: pa.Table, orphans: KeySet | None = None) -> pa.Table:
    """The current rows of some result rows that hold every row of their keys (`id`, `task`, `run_id`, `page`
    when any, and `_file`: the number of the file, in name order): per key the latest run's row (of one run, the
    latest file's), less the rows of documents a later run wrote in the other shape (`shape_superseded`), and
    those of `orphans`' keys. Sorted by (id, task)."""
    table = table.sort_by(
        [("id", "ascending"), ("task", "ascending"), ("run_id", "descending"), ("_file", "descending")]
    )
    if table.num_rows > 1:
        table = table.filter(pa.array(~_same_key_as_previous(table)))
        table = table.filter(pa.array(~shape_superseded(table)))
    if orphans is not None and len(orphans):
        table = table.filter(pa.array(~orphaned(table, orphans)))
    return table


def _read_columns(fs, file: str, columns: list[str] | None) -> pa.Table:
    """A result file's columns among `columns` (files from before a column existed lack it)."""
    with fs.open(file, "rb") as f:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        return parquet.read(columns=None if columns is None else [c for c in columns if c in names])


def shape_superseded(table: pa.Table) -> np.ndarray:
    """Per row: whether a later run wrote its document in the other shape. A document's rows are either its
    pages (`page` set, id `<id>#p<n>`) or one row under its own id (it could not be read); a page row older than
    the document's latest whole-document row, or a whole-document row older than its latest page row, is not
    current. Rows of images and videos are never affected."""
    if "page" not in table.column_names or table.column("page").null_count == table.num_rows:
        return np.zeros(table.num_rows, bool)
    ids, tasks = table.column("id").to_pylist(), table.column("task").to_pylist()
    runs, pages = table.column("run_id").to_pylist(), table.column("page").to_pylist()
    paged = [k for k, p in enumerate(pages) if p is not None]
    keys = dict(
        zip(paged, zip(document_ids([ids[k] for k in paged], [pages[k] for k in paged]), [tasks[k] for k in paged]))
    )
    newest_page: dict = {}
    for k, key in keys.items():
        newest_page[key] = max(newest_page.get(key, ""), runs[k] or "")
    newest_whole: dict = {}
    for k, page in enumerate(pages):
        if page is None and (ids[k], tasks[k]) in newest_page:
            newest_whole[(ids[k], tasks[k])] = max(newest_whole.get((ids[k], tasks[k]), ""), runs[k] or "")
    if not newest_whole:
        return np.zeros(table.num_rows, bool)
    out = np.zeros(table.num_rows, bool)
    for k, page in enumerate(pages):
        run = runs[k] or ""
        if page is None:
            out[k] = newest_page.get((ids[k], tasks[k]), "") > run
        else:
            out[k] = newest_whole.get(keys[k], "") > run
    return out


def result_key_rows(output_path: str, files: list[str], storage: StorageConfig) -> tuple[np.ndarray, np.ndarray]:
    """What resume needs of every row of some result files (`done_keys.build_result_keys` makes the current
    state per key of them): uint64 rows of ordinary results [n, 6] (key hash (2), version hash, fingerprint
    hash, ok, order) and of PDF page rows [m, 10] (the row's key hash, its document's key hash, its share of it
    (2 each; `keys.page_shares`), version, fingerprint, ok, order). `order` is the row's `run_id` as
    microseconds (`run_orders`): the latest run's row is current, as `read_results` decides, whatever file holds
    it (a compacted file holds rows of many runs)."""
    fs, _ = fsspec_filesystem(output_path, storage)
    plain, paged = [np.zeros((0, 6), np.uint64)], [np.zeros((0, 10), np.uint64)]
    wanted = ["id", "task", "status", "page", "num_pages", "source_version", "config_fingerprint", "run_id"]
    for file in files:
        with fs.open(file, "rb") as f:
            parquet = pq.ParquetFile(f)
            table = parquet.read(columns=[c for c in wanted if c in parquet.schema_arrow.names])
        n = table.num_rows
        for name in ("page", "source_version", "config_fingerprint"):  # files written before these existed
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(n, pa.int32() if name == "page" else pa.string()))
        state = np.zeros((n, 4), np.uint64)  # one dtype throughout: a float on the way would round the hashes
        state[:, 0] = text_hashes(table.column("source_version").to_pylist())
        state[:, 1] = text_hashes(table.column("config_fingerprint").to_pylist())
        state[:, 2] = pc.equal(table.column("status"), "ok").fill_null(False).to_numpy(zero_copy_only=False)
        state[:, 3] = run_orders(table.column("run_id"))
        is_page = np.asarray(pc.is_valid(table.column("page")).to_numpy(zero_copy_only=False), bool)
        ids, tasks = table.column("id").to_pylist(), table.column("task").to_pylist()
        rows = np.flatnonzero(~is_page)
        plain.append(
            np.concatenate([key_hashes([ids[k] for k in rows], [tasks[k] for k in rows]), state[rows]], axis=1)
        )
        pages = np.flatnonzero(is_page)
        if len(pages):
            page_ids, page_tasks = [ids[k] for k in pages], [tasks[k] for k in pages]
            numbers = table.column("page").take(pages).to_pylist()
            counts = table.column("num_pages").take(pages).to_pylist()
            documents, shares = page_shares(document_ids(page_ids, numbers), page_tasks, numbers, counts)
            paged.append(np.concatenate([key_hashes(page_ids, page_tasks), documents, shares, state[pages]], axis=1))
    return np.concatenate(plain), np.concatenate(paged)


def run_orders(run_ids: pa.ChunkedArray) -> np.ndarray:
    """uint64 per row: its run id's time in microseconds since 1970 (later runs sort later: `new_run_id`);
    0 for a row without one."""
    encoded = run_ids.combine_chunks().dictionary_encode()
    values = [_run_time(v) for v in encoded.dictionary.to_pylist()]
    lookup = np.asarray(values + [0], np.uint64)
    codes = encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
    return lookup[codes]


def _run_time(run_id: str | None) -> int:
    try:
        stamp = datetime.strptime((run_id or "")[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return 0
    return int(stamp.timestamp() * 1_000_000)


def result_records(
    output_path: str, files: list[str], first_index: int, storage: StorageConfig, partitions: int
) -> list[pa.Table]:
    """(id, task, run_id, page, position) of every row of some result files (paths as `result_files` gives them),
    split by a hash of the id (a page row's: its document's, so that a document's rows meet); a position is
    `(file number << 32) | row`, files numbered from `first_index`."""
    fs, _ = fsspec_filesystem(output_path, storage)
    tables = []
    for number, file in enumerate(files, start=first_index):
        table = _read_columns(fs, file, ["id", "task", "run_id", "page"])
        if "page" not in table.column_names:
            table = table.append_column("page", pa.nulls(table.num_rows, pa.int32()))
        rows = np.arange(table.num_rows, dtype=np.uint64) | np.uint64(number << 32)
        tables.append(table.append_column("position", pa.array(rows)))
    if not tables:
        return [RECORD_SCHEMA.empty_table() for _ in range(partitions)]
    table = pa.concat_tables(tables).select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA)
    ids, pages = table.column("id").fill_null("").to_pylist(), table.column("page").to_pylist()
    documents = [i if p is None else document_ids([i], [p])[0] for i, p in zip(ids, pages)]
    parts = partition_of(documents, partitions)
    return [table.filter(pa.array(parts == p)) for p in range(partitions)]


def superseded_positions(tables: list[pa.Table]) -> np.ndarray:
    """Positions of rows that are not their key's current row (latest run, then latest file wins), or whose
    document a later run wrote in the other shape (`shape_superseded`)."""
    table = pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()
    if table.num_rows < 2:
        return np.zeros(0, np.uint64)
    table = table.sort_by(
        [("id", "ascending"), ("task", "ascending"), ("run_id", "descending"), ("position", "descending")]
    )
    later = _same_key_as_previous(table) | shape_superseded(table)
    return np.sort(table.column("position").to_numpy()[later])


def read_result_file(
    output_path: str,
    file: str,
    number: int,
    storage: StorageConfig,
    superseded: np.ndarray,
    columns: list[str] | None = None,
) -> pa.Table:
    """One result file's current rows: those whose position is not in `superseded` (sorted)."""
    fs, _ = fsspec_filesystem(output_path, storage)
    with fs.open(file, "rb") as f:
        table = pq.read_table(f, columns=columns)
    # Only this file's positions (file number in the high 32 bits): a search, not a pass over every file's, which
    # made reading or compacting F files cost F passes over all superseded positions.
    lo, hi = np.searchsorted(superseded, np.array([number << 32, (number + 1) << 32], np.uint64))
    if hi > lo:
        keep = np.ones(table.num_rows, bool)
        keep[(superseded[lo:hi] & np.uint64(0xFFFFFFFF)).astype(np.int64)] = False
        table = table.filter(pa.array(keep))
    return table


def _same_key_as_previous(table: pa.Table) -> np.ndarray:
    """Per row of a table sorted by (id, task): whether it has the same key as the row before."""
    same = None
    for key in ("id", "task"):
        values = table.column(key).fill_null("")
        equal = pc.equal(values.slice(1), values.slice(0, table.num_rows - 1))
        same = equal if same is None else pc.and_(same, equal)
    return np.concatenate([[False], same.combine_chunks().to_numpy(zero_copy_only=False)])
