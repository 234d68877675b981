"""What a report shows, read from a job's output path in bounded memory.

- The output, in either layout (`output_layout.py`; nothing is moved): a path without an output, or an
  output without result files, is a ConfigError (one line: what is there instead), not an empty page.
- Run summaries: `.internvl-batch/summary.json` (the latest run) and `.internvl-batch/runs/*.json` (every run:
  one small file each); on a legacy output `_summary.json` and `_runs/*.json`.
- Rows: a few light columns of the result files, up to `max_files` of them (beyond that, that many files
  spread evenly over the output stand for the rest) and up to `MAX_ROWS` rows in all (each file read gives
  its first `MAX_ROWS // files` rows): memory does not grow with the output or with `output.rows_per_file`.
  The report says when it read a sample. Among the rows read, the latest run's row of each (id, task) is the
  current one (as `read_results`).
- From those rows: counts, per-row values for the plots (tiles, input and output tokens, finish reasons),
  failures grouped by stage and error type with a few examples each, and a random sample of ok rows per task
  (read again whole, for the gallery).
- A result file that cannot be read (not Parquet, a column of another type, a string column holding invalid
  UTF-8) is skipped and listed with the reason (`ReportData.skipped`); the rest of the output is reported. A
  file whose sampled gallery rows cannot be read keeps its counts and is listed too.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.output_dir import read_summary as read_summary  # `media.py` reads the recorded roots
from internvl_batch.output_layout import DATA_DIR, OutputListing, list_output
from internvl_batch.stages.output import OUTPUT_SCHEMA

LIGHT_COLUMNS = (
    "id",
    "task",
    "status",
    "run_id",
    "page",
    "media",
    "num_tiles",
    "num_input_tokens",
    "num_output_tokens",
    "finish_reason",
    "error",
    "error_stage",
    "error_type",
    "parse_error",
)
LIGHT_SCHEMA = pa.schema([OUTPUT_SCHEMA.field(name) for name in LIGHT_COLUMNS])
EXAMPLES_PER_ERROR = 3
MAX_ROWS = 200_000  # rows read at most (~100 MB of light columns)
# What reading one result file may raise without the report failing: not Parquet or cut short (ArrowInvalid,
# OSError), a column of another type (ArrowTypeError, ArrowNotImplementedError), invalid UTF-8 (ArrowInvalid
# from `_check_valid`, UnicodeDecodeError when a value is turned into Python).
UNREADABLE = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError)


@dataclass
class ReportData:
    output_path: str
    summary: dict | None  # the latest run's summary
    runs: list[dict]  # every run's summary, oldest first (without config and versions)
    files_total: int
    files_read: int
    files_cut: int = 0  # files of which only the first rows were read (MAX_ROWS)
    rows: int = 0
    ok: int = 0
    by_task: Counter = field(default_factory=Counter)  # rows per task
    ok_by_task: Counter = field(default_factory=Counter)
    parse_errors: int = 0
    tiles: list[int] = field(default_factory=list)
    input_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    finish_reasons: Counter = field(default_factory=Counter)
    error_groups: dict[tuple[str, str], dict] = field(default_factory=dict)  # (stage, type) -> count, examples
    gallery: dict[str, list[dict]] = field(default_factory=dict)  # task -> sampled ok rows, whole
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (result file, why) of files not (all) read

    @property
    def sampled(self) -> bool:
        return self.files_read < self.files_total or self.files_cut > 0


def collect(
    output_path: str, storage: StorageConfig, sample: int = 12, max_files: int = 200, seed: int = 0
) -> ReportData:
    """Read what the report needs; `sample`: ok rows per task in the gallery. Raises ConfigError when there is
    no output at `output_path`, or no result files in it (`require_results`)."""
    fs, path = fsspec_filesystem(output_path, storage)
    listing = require_results(output_path, list_output(fs, path))
    files = listing.result_files
    chosen = files if len(files) <= max_files else [files[i * len(files) // max_files] for i in range(max_files)]
    summary = _read_json(fs, listing.summary_file) if listing.summary_file else None
    data = ReportData(output_path, summary, _runs(fs, listing), len(files), len(chosen))
    tables = []
    rows_per_file = max(1, MAX_ROWS // max(1, len(chosen)))
    for number, file in enumerate(chosen):
        try:
            table, cut = _read_light(fs, file, rows_per_file)
        except UNREADABLE as exc:
            data.skipped.append((file, f"skipped: {unreadable_reason(exc)}"))
            continue
        data.files_cut += cut
        table = table.append_column("_file", pa.array([number] * table.num_rows, pa.int32()))
        tables.append(table.append_column("_row", pa.array(range(table.num_rows), pa.int32())))
    if not tables:
        return data
    table = pa.concat_tables(tables)
    table = _current(table)
    _count(data, table)
    _sample_gallery(data, fs, chosen, table, sample, random.Random(seed))
    return data


def require_results(output_path: str, listing: OutputListing) -> OutputListing:
    """`listing` (of `output_path`) when it has result files; else ConfigError, one line: no output there, or
    what the output holds instead of results."""
    if not listing.exists:
        raise ConfigError(f"no output at {output_path}")
    if not listing.result_files:
        raise ConfigError(
            f"{output_path} holds no results of this job ({listing.describe()}; its result files are named "
            f"{DATA_DIR}/part-<run id>-<12 hex>.parquet)"
        )
    return listing


def _read_light(fs, file: str, limit: int) -> tuple[pa.Table, bool]:
    """The light columns of a result file's first `limit` rows (as `LIGHT_SCHEMA`: a column the file lacks is
    nulls), and whether the file has more. Raises one of `UNREADABLE` for a file the report cannot use."""
    import pyarrow.parquet as pq

    with fs.open(file, "rb") as f:
        parquet = pq.ParquetFile(f)
        columns = [c for c in LIGHT_COLUMNS if c in parquet.schema_arrow.names]
        batches, rows = [], 0
        for batch in parquet.iter_batches(batch_size=min(limit, 65_536), columns=columns):
            batches.append(batch.slice(0, limit - rows))
            rows += batches[-1].num_rows
            if rows >= limit:
                break
        schema = pa.schema([parquet.schema_arrow.field(c) for c in columns])
        table = pa.Table.from_batches(batches, schema)
        more = parquet.metadata.num_rows > rows
    _check_valid(table)
    arrays = [
        table.column(f.name).cast(f.type) if f.name in columns else pa.nulls(table.num_rows, f.type)
        for f in LIGHT_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=LIGHT_SCHEMA), more


def _check_valid(table: pa.Table) -> None:
    """Raises `pa.ArrowInvalid` naming the column when a column's data are invalid: above all a string that is
    not UTF-8 (Parquet readers do not check it; turning the value into Python would fail)."""
    for name in table.column_names:
        try:
            table.column(name).validate(full=True)
        except pa.ArrowInvalid as exc:
            raise pa.ArrowInvalid(f"column {name!r}: {exc}") from None


def unreadable_reason(exc: BaseException) -> str:
    """Why a result file could not be used, in a line."""
    text = " ".join(str(exc).split())
    if isinstance(exc, UnicodeDecodeError) or "UTF8" in text:
        return f"a string column holds invalid UTF-8 ({text})"[:300]
    return f"{type(exc).__name__}: {text}"[:300]


def _current(table: pa.Table) -> pa.Table:
    """The latest run's row of each (id, task) among the rows read: the first of each key once sorted."""
    table = table.sort_by(
        [("id", "ascending"), ("task", "ascending"), ("run_id", "descending"), ("_file", "descending")]
    )
    if table.num_rows < 2:
        return table
    ids, tasks = table.column("id").combine_chunks(), table.column("task").combine_chunks()
    changed = pc.or_(pc.not_equal(ids[1:], ids[:-1]), pc.not_equal(tasks[1:], tasks[:-1]))
    return table.filter(pa.concat_arrays([pa.array([True]), pc.fill_null(changed, True)]))


def _count(data: ReportData, table: pa.Table) -> None:
    data.rows = table.num_rows
    for row in (row for batch in table.to_batches(max_chunksize=4096) for row in batch.to_pylist()):
        data.by_task[row["task"]] += 1
        if row["status"] == "ok":
            data.ok += 1
            data.ok_by_task[row["task"]] += 1
            data.tiles.append(sum(row["num_tiles"] or []))
            data.input_tokens.append(row["num_input_tokens"] or 0)
            data.output_tokens.append(row["num_output_tokens"] or 0)
            data.finish_reasons[row["finish_reason"] or "unknown"] += 1
            data.parse_errors += row["parse_error"] is not None
            continue
        group = data.error_groups.setdefault(
            (row["error_stage"] or "unknown", row["error_type"] or "unknown"), {"count": 0, "examples": []}
        )
        group["count"] += 1
        if len(group["examples"]) < EXAMPLES_PER_ERROR:
            group["examples"].append({"id": row["id"], "media": row["media"] or [], "error": row["error"]})


def _sample_gallery(data: ReportData, fs, files: list[str], table: pa.Table, sample: int, rng: random.Random) -> None:
    """Up to `sample` ok rows per task, read whole from their files."""
    ok = table.filter(pc.equal(table.column("status"), "ok"))
    wanted: dict[int, list[int]] = {}
    for task in sorted(set(ok.column("task").to_pylist())):
        rows = ok.filter(pc.equal(ok.column("task"), task))
        positions = list(zip(rows.column("_file").to_pylist(), rows.column("_row").to_pylist()))
        for file_number, row in sorted(rng.sample(positions, min(sample, len(positions)))):
            wanted.setdefault(file_number, []).append(row)
    import pyarrow.parquet as pq

    for file_number, rows in sorted(wanted.items()):
        try:
            with fs.open(files[file_number], "rb") as f:
                whole = pq.read_table(f).take(rows)
            _check_valid(whole)
            taken = whole.to_pylist()
        except UNREADABLE as exc:
            reason = f"{len(rows)} gallery rows not shown (its rows are counted): {unreadable_reason(exc)}"
            data.skipped.append((files[file_number], reason))
            continue
        for row in taken:
            data.gallery.setdefault(row["task"], []).append(row)
    for rows in data.gallery.values():
        rows.sort(key=lambda r: (str(r["id"]), r.get("page") or 0))


def _runs(fs, listing: OutputListing) -> list[dict]:
    """Every recorded run's record, oldest first, without its config, versions and manifest report."""
    runs = []
    for file in listing.record_files.values():
        summary = _read_json(fs, file)
        if summary:
            runs.append({k: v for k, v in summary.items() if k not in ("config", "versions", "manifest")})
    return runs


def _read_json(fs, file: str) -> dict | None:
    """A JSON object from `file`, or None (gone since it was listed, not JSON, not an object)."""
    try:
        with fs.open(file, "r") as f:
            found = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    return found if isinstance(found, dict) else None
