"""`ray job submit` of the entrypoint (`jobs/caption.py`) to a cluster started with `ray start --head`, token
auth on: a job that succeeds prints our summary and writes its output, with the command line's `--set` applied;
a job that fails makes the command exit non-zero. Both were submitted at the same time to the two-node cluster
of `two_node_jobs.py` (whose placement and staging `test_two_nodes.py` checks)."""

import io

import pyarrow.parquet as pq
import pytest

from tests.integration.two_node_jobs import MAX_NEW_TOKENS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_submitted_job_succeeds(two_node_jobs, s3):
    jobs = two_node_jobs
    proc = jobs.succeeded
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + jobs.node_logs
    assert "succeeded" in proc.stdout
    assert "== internvl-batch summary ==" in proc.stdout and "rows: 9 ok, 2 failed" in proc.stdout

    files = [f for f in s3.find(f"{jobs.bucket}/captions") if f.endswith(".parquet")]
    out = []
    for file in files:
        with s3.open(file, "rb") as handle:
            out += pq.read_table(io.BytesIO(handle.read())).to_pylist()
    assert sorted(r["id"] for r in out) == sorted(jobs.expected_ids)
    ok = [r for r in out if r["error"] is None]
    assert len(ok) == 9 and all(r["response"] and r["num_output_tokens"] == MAX_NEW_TOKENS for r in ok)


def test_failed_job_exits_non_zero(two_node_jobs):
    proc = two_node_jobs.failed
    assert proc.returncode != 0
    assert "manifest /nonexistent/m.jsonl: no such file" in proc.stdout + proc.stderr
