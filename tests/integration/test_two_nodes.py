"""Across nodes: a two-node Ray cluster (head + a worker with its own temp dir and a custom resource), the job
submitted by a driver outside it, everything on S3 (model, manifests, media, output), and the model replicas
forced onto the worker node with `resources.replica_resources`.

Where things ran is read from the disks they left: each node's processes inherit their node's
INTERNVL_BATCH_CACHE, so the model's weights must be staged on the worker node only (preprocessing and the
driver stage configs and tokenizer, never weights).
"""

import json
import os
import secrets
import subprocess
import sys

import pytest
import yaml

from internvl_batch.config import StorageConfig
from internvl_batch.output_dir import summary_path
from internvl_batch.results import read_results
from tests.integration.conftest import free_port
from tests.integration.ray_nodes import RayNode, wait_for_nodes
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def put(s3, path, data):
    with s3.open(path, "wb") as f:
        f.write(data)


def test_job_on_two_nodes_with_replicas_on_the_worker(s3, bucket, s3_endpoint, tiny_checkpoint, aws_env, tmp_path):
    for file in tiny_checkpoint.iterdir():
        put(s3, f"{bucket}/models/tiny/{file.name}", file.read_bytes())
    sizes = [(448, 448), (640, 480), (300, 900)]
    for i in range(9):
        put(s3, f"{bucket}/media/{i}.jpg", encode(make_photo(*sizes[i % 3], seed=i), "JPEG"))
    shards = [[{"id": f"s{s}-{i}", "image": f"../media/{(3 * s + i) % 9}.jpg"} for i in range(5)] for s in range(2)]
    shards[1][2] = {"id": "gone", "image": "../media/absent.jpg"}
    for s, rows in enumerate(shards):
        lines = [json.dumps(r) for r in rows]
        if s == 0:
            lines.insert(3, "{broken")
        put(s3, f"{bucket}/manifests/part-{s}.jsonl", ("\n".join(lines) + "\n").encode())
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "input": {"manifests": f"s3://{bucket}/manifests/*.jsonl", "split_bytes": 120},
                "output": {"path": f"s3://{bucket}/captions", "max_error_fraction": 1.0},
                "model": {"path": f"s3://{bucket}/models/tiny"},
                "generation": {"max_new_tokens": 4},
                "storage": {"endpoint_url": s3_endpoint},
                "resources": {
                    "cpu_actors": 1,
                    "cpu_batch_size": 2,
                    "gpu_replicas": 1,
                    "gpu_batch_size": 4,
                    "rows_per_block": 3,
                    "replica_resources": {"replica_node": 1},
                },
            }
        )
    )

    caches = {name: tmp_path / f"cache-{name}" for name in ("head", "worker", "driver")}
    env = {**os.environ, **aws_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode(
        ["--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"],
        {**env, "INTERNVL_BATCH_CACHE": str(caches["head"])},
        "rh",
    )
    worker = None
    try:
        wait_for_nodes(address, 1, env)
        worker = RayNode(
            [f"--address={address}", "--num-cpus=1", '--resources={"replica_node": 1}'],
            {**env, "INTERNVL_BATCH_CACHE": str(caches["worker"])},
            "rw",
        )
        wait_for_nodes(address, 2, env)
        driver_env = {**env, "RAY_ADDRESS": address, "INTERNVL_BATCH_CACHE": str(caches["driver"])}
        proc = subprocess.run(
            [sys.executable, "-m", "internvl_batch.cli", "run", str(config)],
            env=driver_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, (
            proc.stdout[-3000:] + proc.stderr[-3000:] + head.log() + (worker.log() if worker else "")
        )
    finally:
        if worker is not None:
            worker.stop()
        head.stop()

    current = {
        r["id"]: r for r in read_results(f"s3://{bucket}/captions", StorageConfig(endpoint_url=s3_endpoint)).to_pylist()
    }
    expected = [r["id"] for rows in shards for r in rows] + ["part-0.jsonl:4"]
    assert sorted(current) == sorted(expected)
    assert current["gone"]["error"].startswith("fetch: FetchError:") and "not found" in current["gone"]["error"]
    assert current["part-0.jsonl:4"]["error"].startswith("manifest: ManifestError: line 4 is not valid JSON")
    assert all(current[i]["status"] == "ok" for i in expected if i not in ("gone", "part-0.jsonl:4"))
    with s3.open(summary_path(f"{bucket}/captions")) as f:
        summary = json.loads(f.read())
    assert summary["one_row_per_input"] and summary["rows_processed"] == len(expected) == summary["results_expected"]

    weights = {name: sorted(p.name for p in path.rglob("*.safetensors")) for name, path in caches.items()}
    assert weights["worker"] and not weights["head"] and not weights["driver"], weights
