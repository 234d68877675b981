"""Write stage: each batch of output rows becomes one result file, atomically (`results.write_result_file`).

Columns in: the output schema. Out (to the driver): one row of counts per file written (`STATS_SCHEMA`), never
per-row data, so the driver's work does not grow with the rows: rows, ok, errors by stage and by type, images, tiles,
output tokens, the number of (id, task) results completed and their checksum (`keys.key_checksum`), which the
job compares with the scan's count and checksum of the keys it expected. A PDF's page rows add their shares of
the document's key (`keys.page_shares`), and only its last page counts the result as completed.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from internvl_batch.config import JobConfig, StorageConfig
from internvl_batch.keys import add_checksums, document_ids, key_checksum, key_hashes, page_shares
from internvl_batch.results import write_result_file
from internvl_batch.stages.columns import require_columns

STATS_SCHEMA = pa.schema(
    [
        ("rows", pa.int64()),
        ("ok", pa.int64()),
        ("errors_by_stage", pa.string()),
        ("errors_by_type", pa.string()),  # JSON {"<stage>: <ErrorType>": rows}
        ("images", pa.int64()),
        ("tiles", pa.int64()),
        ("output_tokens", pa.int64()),
        ("keys", pa.int64()),
        ("keys_high", pa.uint64()),
        ("keys_low", pa.uint64()),
    ]
)

# The output columns the counts read (`stages/output.py`); the file gets every column of the batch.
INPUT_COLUMNS = (
    "id",
    "task",
    "status",
    "error_stage",
    "error_type",
    "media",
    "num_tiles",
    "num_output_tokens",
    "page",
    "num_pages",
)


class WriteStage:
    """Callable per batch of output rows; build once per writer actor."""

    INPUT_COLUMNS = INPUT_COLUMNS
    OUTPUT_COLUMNS = tuple(STATS_SCHEMA.names)
    DROPPED_COLUMNS = None

    def __init__(self, output_path: str, storage: StorageConfig, run_id: str) -> None:
        self.output_path = output_path
        self.storage = storage
        self.run_id = run_id

    @staticmethod
    def sections(config: JobConfig) -> dict:
        """The parts of the job's config this stage uses (the run id is per run)."""
        return {"output_path": config.output.path, "storage": config.storage}

    def __call__(self, batch: pa.Table) -> pa.Table:
        return write_batch(batch, self.output_path, self.storage, self.run_id)


def write_batch(batch: pa.Table, output_path: str, storage: StorageConfig, run_id: str) -> pa.Table:
    require_columns(batch, "WriteStage", INPUT_COLUMNS)
    if not batch.num_rows:
        return STATS_SCHEMA.empty_table()
    write_result_file(batch, output_path, storage, run_id)
    return batch_stats(batch)


def batch_stats(batch: pa.Table) -> pa.Table:
    """One row of counts for a batch of output rows."""
    ok_mask = pc.equal(batch.column("status"), "ok")
    ok_rows = batch.filter(ok_mask)
    failed = batch.filter(pc.invert(ok_mask))
    stages = failed.column("error_stage").fill_null("unknown")
    by_stage = {v["values"]: v["counts"] for v in pc.value_counts(stages).to_pylist()} if failed.num_rows else {}
    types = pc.binary_join_element_wise(stages, failed.column("error_type").fill_null("unknown"), ": ")
    by_type = {v["values"]: v["counts"] for v in pc.value_counts(types).to_pylist()} if failed.num_rows else {}
    keys, (high, low) = written_keys(batch)
    return pa.table(
        [
            [batch.num_rows],
            [ok_rows.num_rows],
            [json.dumps(by_stage, sort_keys=True)],
            [json.dumps(by_type, sort_keys=True)],
            [_sum(pc.list_value_length(ok_rows.column("media")))],
            [_sum(pc.list_flatten(ok_rows.column("num_tiles")))],
            [_sum(ok_rows.column("num_output_tokens"))],
            [keys],
            pa.array([high], pa.uint64()),
            pa.array([low], pa.uint64()),
        ],
        schema=STATS_SCHEMA,
    )


def written_keys(batch: pa.Table) -> tuple[int, tuple[int, int]]:
    """(results completed, checksum) of a batch of output rows: a row's own key, or a page's share of its document's."""
    ids, tasks = batch.column("id").to_pylist(), batch.column("task").to_pylist()
    pages = batch.column("page").to_pylist()
    plain = [k for k, p in enumerate(pages) if p is None]
    if len(plain) == batch.num_rows:
        return batch.num_rows, key_checksum(key_hashes(ids, tasks))
    paged = [k for k, p in enumerate(pages) if p is not None]
    counts = batch.column("num_pages").to_pylist()
    _, shares = page_shares(
        document_ids([ids[k] for k in paged], [pages[k] for k in paged]),
        [tasks[k] for k in paged],
        [pages[k] for k in paged],
        [counts[k] for k in paged],
    )
    checksum = add_checksums(
        key_checksum(key_hashes([ids[k] for k in plain], [tasks[k] for k in plain])), key_checksum(shares)
    )
    return len(plain) + sum(1 for k in paged if pages[k] >= counts[k]), checksum


def _sum(values) -> int:
    return int(pc.sum(values).as_py() or 0) if len(values) else 0
