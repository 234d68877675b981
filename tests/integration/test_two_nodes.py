"""Across nodes: a two-node Ray cluster (head + a worker with its own temp dir and a custom resource), the job
submitted to it with `ray job submit`, everything on S3 (model, manifests, media, output), and the model
replicas forced onto the worker node with `resources.replica_resources` (`two_node_jobs.py`, whose job
`test_job_submit.py` also reads).

Where things ran is read from the disks they left: each node's processes inherit their node's
INTERNVL_BATCH_CACHE, so the model's weights must be staged on the worker node only (preprocessing and the
driver, which runs on the head, stage configs and tokenizer, never weights).
"""

import json

import pytest

from internvl_batch.config import StorageConfig
from internvl_batch.output_dir import summary_path
from internvl_batch.results import read_results

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_job_on_two_nodes_with_replicas_on_the_worker(two_node_jobs, s3, s3_endpoint):
    jobs = two_node_jobs
    proc = jobs.succeeded
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + jobs.node_logs

    output = f"s3://{jobs.bucket}/captions"
    current = {r["id"]: r for r in read_results(output, StorageConfig(endpoint_url=s3_endpoint)).to_pylist()}
    expected = jobs.expected_ids
    assert sorted(current) == sorted(expected)
    assert current["gone"]["error"].startswith("fetch: FetchError:") and "not found" in current["gone"]["error"]
    assert current["part-0.jsonl:4"]["error"].startswith("manifest: ManifestError: line 4 is not valid JSON")
    assert all(current[i]["status"] == "ok" for i in expected if i not in ("gone", "part-0.jsonl:4"))
    with s3.open(summary_path(f"{jobs.bucket}/captions")) as f:
        summary = json.loads(f.read())
    assert summary["one_row_per_input"] and summary["rows_processed"] == len(expected) == summary["results_expected"]

    staged = {name: sorted(p.name for p in path.rglob("*")) for name, path in jobs.caches.items()}
    weights = {name: [n for n in names if n.endswith(".safetensors")] for name, names in staged.items()}
    assert weights["worker"] and not weights["head"], staged
    assert "config.json" in staged["head"], staged  # the head's processes (the driver's too) did stage, but no weights
