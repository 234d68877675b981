"""Resume: a run whose driver is killed partway, then rerun: every id exactly once; a third run does nothing.

The job runs as users run it (`internvl-batch run`), its driver connected to a running Ray cluster (the tests'
shared one, through RAY_ADDRESS, as `ray job submit` does); the test kills the driver with SIGKILL, as when the
pod running it is lost, and the cluster ends that job's actors.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from internvl_batch.output_dir import read_summary
from internvl_batch.results import read_results
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 18


def run_cli(args, env, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "internvl_batch.cli", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def test_killed_run_resumes(ray_local, tmp_path, tiny_checkpoint):
    sizes = [(448, 448), (640, 480), (500, 500)]
    rows = []
    for i in range(ROWS):
        (tmp_path / f"{i}.jpg").write_bytes(encode(make_photo(*sizes[i % 3], seed=i), "JPEG"))
        rows.append({"id": f"img{i:02d}", "image": f"{i}.jpg"})
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "input": {"manifests": str(tmp_path / "m.jsonl")},
                "output": {"path": str(out), "rows_per_file": 2},
                "model": {"path": str(tiny_checkpoint)},
                "generation": {"max_new_tokens": 32},
                "resources": {
                    "cpu_actors": 1,
                    "cpu_batch_size": 2,
                    "gpu_replicas": 1,
                    "gpu_batch_size": 2,
                    "rows_per_block": 2,
                },
            }
        )
    )
    import ray

    # The cluster's address and its token (tests/conftest.py put it in this process's environment).
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    run_three_times(config, env, out, rows)


def run_three_times(config, env, out, rows):

    first = run_cli(["run", str(config)], env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None and len(list(out.rglob("part-*.parquet"))) < 3:
        time.sleep(0.2)
    assert first.poll() is None, "the first run ended before it could be killed:\n" + first.stdout.read()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    partial = read_results(str(out))
    assert 0 < partial.num_rows < ROWS

    second = run_cli(["run", str(config)], env)
    log = second.communicate(timeout=600)[0]
    assert second.returncode == 0, log[-3000:]
    summary = read_summary(out)
    assert summary["rows_already_done"] >= partial.num_rows
    assert summary["rows_already_done"] + summary["rows_processed"] == ROWS
    current = read_results(str(out))
    assert sorted(current.column("id").to_pylist()) == [r["id"] for r in rows]
    assert set(current.column("status").to_pylist()) == {"ok"}
    assert not list(out.rglob(".part-*.tmp"))

    third = run_cli(["run", str(config)], env)
    log = third.communicate(timeout=600)[0]
    assert third.returncode == 0, log[-3000:]
    summary = read_summary(out)
    assert (summary["rows_processed"], summary["rows_already_done"]) == (0, ROWS)
    assert "MapBatches(GenerateStage)" not in log  # no pipeline, no model: nothing was left to do
    assert read_results(str(out)).num_rows == ROWS
