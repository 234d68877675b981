"""Jobs submitted with `ray job submit`, as users submit them, to a two-node Ray cluster that the tests start
with `ray start` (token authentication on): a head with the dashboard, and a worker node with its own temp dir,
its own cache and a custom resource. Both jobs are submitted at the same time:

- one with everything on S3 (model, manifests, media, output), its model replicas forced onto the worker node
  with `resources.replica_resources`, and a `--set` on the command line;
- one that fails (its manifest does not exist).

The cluster is stopped before the tests read what the jobs left: the submit commands' output, the output on
S3, and each node's cache. Each node's processes inherit their node's INTERNVL_BATCH_CACHE (the job's driver,
which `ray job submit` runs on the head, included), so where things ran is read from the disks they left.

Shared by `test_job_submit.py` and `test_two_nodes.py` through the session fixture `two_node_jobs`
(conftest.py): one cluster and one job serve both.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.integration.conftest import free_port
from tests.integration.ray_nodes import RayNode, wait_for_nodes
from tests.media import encode, make_photo

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MAX_NEW_TOKENS = 4  # set on the command line, over the config's 5


@dataclass(frozen=True)
class TwoNodeJobs:
    succeeded: subprocess.CompletedProcess  # `ray job submit` of the job on S3
    failed: subprocess.CompletedProcess  # `ray job submit` of the job whose manifest does not exist
    bucket: str
    expected_ids: list[str]  # one result per input: the manifests' ids and the malformed line's
    caches: dict[str, Path]  # INTERNVL_BATCH_CACHE of the "head" and the "worker" node
    node_logs: str  # the nodes' `ray start` output, for failure messages


def put(s3, path, data):
    with s3.open(path, "wb") as f:
        f.write(data)


def write_inputs(s3, bucket: str, checkpoint: Path) -> list[str]:
    """The model, 10 photos and two JSONL manifests on S3 (a row whose image is missing, a malformed line);
    returns the ids of the results the job must write."""
    for file in checkpoint.iterdir():
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
    return [r["id"] for rows in shards for r in rows] + ["part-0.jsonl:4"]


def submit(address: str, env: dict, config: Path, *args: str, attempts: int = 30) -> subprocess.CompletedProcess:
    """`ray job submit` of `jobs/caption.py`, again while the new head's job agent has not registered yet
    (nothing was submitted then)."""
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--"]
    command += [sys.executable, "jobs/caption.py", "--config", str(config), *args]
    for _ in range(attempts):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in proc.stdout + proc.stderr:
            return proc
        time.sleep(2)
    return proc


def run_two_node_jobs(s3, s3_endpoint: str, aws_env: dict, checkpoint: Path, tmp_path: Path) -> TwoNodeJobs:
    bucket = "two-nodes-" + secrets.token_hex(4)
    s3.mkdir(bucket)
    expected = write_inputs(s3, bucket, checkpoint)
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "input": {"manifests": f"s3://{bucket}/manifests/*.jsonl", "split_bytes": 120},
                "output": {"path": f"s3://{bucket}/captions", "max_error_fraction": 1.0},
                "model": {"path": f"s3://{bucket}/models/tiny"},
                "generation": {"max_new_tokens": 5},
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
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "input": {"manifests": "/nonexistent/m.jsonl"},
                "output": {"path": str(tmp_path / "out")},
                "model": {"path": str(checkpoint)},
            }
        )
    )

    caches = {name: tmp_path / f"cache-{name}" for name in ("head", "worker")}
    env = {**os.environ, **aws_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    port, dashboard = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode(
        [
            "--head",
            f"--port={port}",
            f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=true",
        ],
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
        with ThreadPoolExecutor(2) as pool:
            failing = pool.submit(submit, f"http://127.0.0.1:{dashboard}", env, bad)
            succeeded = submit(
                f"http://127.0.0.1:{dashboard}", env, config, "--set", f"generation.max_new_tokens={MAX_NEW_TOKENS}"
            )
            failed = failing.result()
        logs = head.log() + (worker.log() if worker else "")
    finally:
        if worker is not None:
            worker.stop()
        head.stop()
    return TwoNodeJobs(succeeded, failed, bucket, expected, caches, logs)
