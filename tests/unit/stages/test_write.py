"""The write stage's counts: one row per result file, what the driver adds up instead of per-row data."""

import pyarrow as pa

from internvl_batch.config import StorageConfig
from internvl_batch.keys import add_checksums, key_checksum, key_hashes
from internvl_batch.results import read_results
from internvl_batch.stages.output import to_output_table
from internvl_batch.stages.write import STATS_SCHEMA, write_batch
from internvl_batch.summary import RunStats

RUN = "20260101T000000000000Z-000001"  # as `output_dir.new_run_id` makes them: result files are named after it


def output_rows(ids, errors, tasks=None):
    n = len(ids)
    table = pa.table(
        {
            "id": ids,
            "task": tasks or ["caption"] * n,
            "error": pa.array(errors, pa.string()),
            "media": [["a.jpg", "b.jpg"] if e is None else ["a.jpg"] for e in errors],
            "num_tiles": [[13, 5] if e is None else None for e in errors],
            "num_output_tokens": pa.array([7 if e is None else None for e in errors], pa.int32()),
        }
    )
    return to_output_table(table, "tiny", [], RUN)


def test_one_row_of_counts_per_file(tmp_path):
    batch = output_rows(["a", "b", "c", "d"], [None, "fetch: FetchError: x", "decode: ImageDecodeError: y", None])
    stats = write_batch(batch, output_path=str(tmp_path), storage=StorageConfig(), run_id=RUN)
    assert stats.schema == STATS_SCHEMA and stats.num_rows == 1
    row = stats.to_pylist()[0]
    assert (row["rows"], row["ok"], row["images"], row["tiles"], row["output_tokens"]) == (4, 2, 4, 36, 14)
    assert row["errors_by_stage"] == '{"decode": 1, "fetch": 1}'
    assert row["errors_by_type"] == '{"decode: ImageDecodeError": 1, "fetch: FetchError": 1}'
    assert (row["keys_high"], row["keys_low"]) == key_checksum(key_hashes(["a", "b", "c", "d"], ["caption"] * 4))
    assert read_results(str(tmp_path)).num_rows == 4
    assert write_batch(batch.slice(0, 0), output_path=str(tmp_path), storage=StorageConfig(), run_id=RUN).num_rows == 0


def test_run_stats_add_up_files():
    stats = RunStats(results_to_do=6)
    first = output_rows(["a", "b", "c"], [None, None, "fetch: FetchError: x"])
    second = output_rows(["d", "e", "f"], ["fetch: FetchError: y", None, "generate: ReplicaCrashed: z"])
    from internvl_batch.stages.write import batch_stats

    stats.add(batch_stats(first))
    stats.add(batch_stats(second))
    summary = stats.as_dict(1.0)
    assert (summary["rows_processed"], summary["rows_ok"], summary["rows_failed"]) == (6, 3, 3)
    assert summary["errors_by_stage"] == {"fetch": 2, "generate": 1} and summary["result_files"] == 2
    assert summary["errors_by_type"] == {"fetch: FetchError": 2, "generate: ReplicaCrashed": 1}
    assert summary["rows_crashed"] == 1  # rows on which model replicas kept dying
    expected = add_checksums(
        key_checksum(key_hashes(list("abc"), ["caption"] * 3)), key_checksum(key_hashes(list("def"), ["caption"] * 3))
    )
    assert stats.checksum == expected == key_checksum(key_hashes(list("abcdef"), ["caption"] * 6))


def test_final_progress_line_has_the_summarys_rate(caplog):
    import logging
    import time

    from internvl_batch.stages.write import batch_stats

    stats = RunStats(results_to_do=3, started=time.monotonic() - 10)
    stats.add(batch_stats(output_rows(["a", "b", "c"], [None, None, "fetch: FetchError: x"])))
    with caplog.at_level(logging.INFO, logger="internvl_batch.progress"):
        stats.log_progress(12.0)
    summary = stats.as_dict(12.0)
    assert [r.getMessage() for r in caplog.records] == [
        f"progress: 3/3 results written (3 rows: 2 ok, 1 failed), {summary['rows_per_s']:.2f} rows/s, done"
    ]


def test_no_periodic_line_once_everything_is_written(caplog):
    import logging

    from internvl_batch.stages.write import batch_stats

    stats = RunStats(results_to_do=3, progress_every_s=0.0)
    with caplog.at_level(logging.INFO, logger="internvl_batch.progress"):
        stats.add(batch_stats(output_rows(["a", "b"], [None, None])))  # work remains: a periodic line
        stats.add(batch_stats(output_rows(["c"], [None])))  # all written: the job's own final line follows
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["progress: 2/3 results written (2 rows: 2 ok"]
