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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from internvl_batch.config import StorageConfig
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.keys import document_ids, key_hashes, page_shares
from internvl_batch.manifest.scan import partition_of
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


def read_results(output_path: str, storage: StorageConfig | None = None, columns: list[str] | None = None) -> pa.Table:
    """Exactly one current row per (id, task): across files and runs, the row from the latest run wins.

    Works after any sequence of interrupted and resumed runs. `columns` limits what is read (`id`, `task` and
    `run_id` are always read).
    """
    storage = storage or StorageConfig()
    fs, _ = fsspec_filesystem(output_path, storage)
    files = result_files(output_path, storage)
    wanted = None if columns is None else list(dict.fromkeys(["id", "task", "run_id", "page", *columns]))
    tables = []
    for index, file in enumerate(files):
        table = _read_columns(fs, file, wanted)
        tables.append(table.append_column("_file", pa.array([index] * table.num_rows, pa.int32())))
    if not tables:
        return pa.table({name: pa.array([], pa.string()) for name in ("id", "task", "run_id")})
    table = pa.concat_tables(tables, promote_options="default")
    table = table.sort_by(
        [("id", "ascending"), ("task", "ascending"), ("run_id", "descending"), ("_file", "descending")]
    )
    if table.num_rows > 1:
        table = table.filter(pa.array(~_same_key_as_previous(table)))
        table = table.filter(pa.array(~shape_superseded(table)))
    if columns is not None and "page" not in columns and "page" in table.column_names:
        table = table.drop_columns(["page"])
    return table.drop_columns(["_file"])


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


def result_key_hashes(
    output_path: str, files: list[str], storage: StorageConfig, ok_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The (id, task) keys with a result in some result files (`keys.key_hashes`): every key with a result, or
    with an `ok` one only (when errors are to be retried). A key once `ok` is never written again by a resuming
    run, so "has an ok row" equals "its latest row is ok" here, and no grouping across files is needed.

    Returns (hashes of the keys of ordinary rows [n, 2], PDF page rows [m, 6]: the row's own key hash, its
    document's key hash, its share of it); `keys.complete_documents` turns page rows into documents done once
    all of a document's rows, from every file, are together."""
    fs, _ = fsspec_filesystem(output_path, storage)
    plain, paged = [np.zeros((0, 2), np.uint64)], [np.zeros((0, 6), np.uint64)]
    for file in files:
        with fs.open(file, "rb") as f:
            parquet = pq.ParquetFile(f)
            wanted = ["id", "task", "status", "page", "num_pages"] if ok_only else ["id", "task", "page", "num_pages"]
            table = parquet.read(columns=[c for c in wanted if c in parquet.schema_arrow.names])
        if ok_only:
            table = table.filter(pc.equal(table.column("status"), "ok"))
        if "page" not in table.column_names:  # written before PDF documents were read
            table = table.append_column("page", pa.nulls(table.num_rows, pa.int32()))
        is_page = pc.is_valid(table.column("page"))
        rows, pages = table.filter(pc.invert(is_page)), table.filter(is_page)
        plain.append(key_hashes(rows.column("id").to_pylist(), rows.column("task").to_pylist()))
        if pages.num_rows:
            ids, tasks = pages.column("id").to_pylist(), pages.column("task").to_pylist()
            numbers, counts = pages.column("page").to_pylist(), pages.column("num_pages").to_pylist()
            documents, shares = page_shares(document_ids(ids, numbers), tasks, numbers, counts)
            paged.append(np.concatenate([key_hashes(ids, tasks), documents, shares], axis=1))
    return np.concatenate(plain), np.concatenate(paged)


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
    if len(superseded):
        positions = np.arange(table.num_rows, dtype=np.uint64) | np.uint64(number << 32)
        table = table.filter(pa.array(~np.isin(positions, superseded)))
    return table


def _same_key_as_previous(table: pa.Table) -> np.ndarray:
    """Per row of a table sorted by (id, task): whether it has the same key as the row before."""
    same = None
    for key in ("id", "task"):
        values = table.column(key).fill_null("")
        equal = pc.equal(values.slice(1), values.slice(0, table.num_rows - 1))
        same = equal if same is None else pc.and_(same, equal)
    return np.concatenate([[False], same.combine_chunks().to_numpy(zero_copy_only=False)])
