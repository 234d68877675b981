"""`ray job submit` of the entrypoint to a cluster started with `ray start --head`, token auth on."""

import io
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.integration.conftest import free_port
from tests.integration.ray_nodes import RayNode, wait_for_nodes
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head(aws_env):
    """`ray start --head` on localhost with its own ports and temp dir, stopped by its own processes; one head
    for the module's jobs (each is its own submission)."""
    env = {**os.environ, **aws_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    dashboard, port = free_port(), free_port()
    head = RayNode(
        [
            "--head",
            f"--port={port}",
            f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1",
            "--num-cpus=3",
            "--include-dashboard=true",
        ],
        env,
        "rayjob",
    )
    try:
        wait_for_nodes(f"127.0.0.1:{port}", 1, env)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        head.stop()


def submit_job(command, env, attempts=30):
    """`ray job submit`, again while the new head's job agent has not registered yet (nothing was submitted)."""
    for _ in range(attempts):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in proc.stdout + proc.stderr:
            return proc
        time.sleep(2)
    return proc


def test_submitted_job_succeeds(ray_head, s3, bucket, s3_endpoint, tiny_checkpoint, tmp_path):
    address, env = ray_head
    for name, size in {"a.jpg": (640, 480), "b.png": (300, 900)}.items():
        with s3.open(f"{bucket}/media/{name}", "wb") as f:
            f.write(encode(make_photo(*size), "JPEG" if name.endswith("jpg") else "PNG"))
    rows = [{"id": "a", "image": "media/a.jpg"}, {"id": "b", "image": "media/b.png", "question": "What is it?"}]
    with s3.open(f"{bucket}/manifest.jsonl", "wb") as f:
        f.write("\n".join(json.dumps(r) for r in rows).encode())
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "input": {"manifests": f"s3://{bucket}/manifest.jsonl"},
                "output": {"path": f"s3://{bucket}/captions"},
                "model": {"path": str(tiny_checkpoint)},
                "generation": {"max_new_tokens": 5},
                "storage": {"endpoint_url": s3_endpoint},
                "resources": {"cpu_actors": 1, "gpu_replicas": 1},
            }
        )
    )

    submit = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(REPO),
        "--",
        sys.executable,
        "jobs/caption.py",
        "--config",
        str(config),
        "--set",
        "generation.max_new_tokens=4",
    ]
    proc = submit_job(submit, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    assert "== internvl-batch summary ==" in proc.stdout and "rows: 2 ok, 0 failed" in proc.stdout

    files = [f for f in s3.find(f"{bucket}/captions") if f.endswith(".parquet")]
    out = []
    for file in files:
        with s3.open(file, "rb") as handle:
            out += pq.read_table(io.BytesIO(handle.read())).to_pylist()
    assert sorted(r["id"] for r in out) == ["a", "b"]
    assert all(r["response"] and r["num_output_tokens"] == 4 and r["error"] is None for r in out)


def test_failed_job_exits_non_zero(ray_head, tiny_checkpoint, tmp_path):
    address, env = ray_head
    config = tmp_path / "bad.yaml"
    bad = {"input": {"manifests": "/nonexistent/m.jsonl"}, "output": {"path": str(tmp_path / "out")}}
    config.write_text(yaml.safe_dump({**bad, "model": {"path": str(tiny_checkpoint)}}))
    submit = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(REPO),
        "--",
        sys.executable,
        "jobs/caption.py",
        "--config",
        str(config),
    ]
    proc = submit_job(submit, env)
    assert proc.returncode != 0
    assert "manifest /nonexistent/m.jsonl: no such file" in proc.stdout + proc.stderr
