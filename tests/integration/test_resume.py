"""Resume: a run whose driver is killed partway, then rerun: every id exactly once; a third run does nothing.

The job runs as users run it (`internvl-batch run`, its own local Ray); the test kills the driver's whole
process group with SIGKILL, as a lost node would, then the Ray processes that run left (found by their own temp
dir, never with `ray stop`).
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from internvl_batch.results import read_results
from tests.integration.ray_nodes import kill_processes_under, short_temp_dir
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 30


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


def test_killed_run_resumes(tmp_path, tiny_checkpoint):
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
    ray_root = short_temp_dir("rr")  # every Ray process of these runs has paths under it: stopped by it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_TMPDIR": ray_root}
    env.pop("RAY_ADDRESS", None)
    try:
        run_three_times(config, env, out, rows)
    finally:
        kill_processes_under(ray_root)
        shutil.rmtree(ray_root, ignore_errors=True)


def run_three_times(config, env, out, rows):

    first = run_cli(["run", str(config)], env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None and len(list(out.glob("part-*.parquet"))) < 3:
        time.sleep(0.2)
    assert first.poll() is None, "the first run ended before it could be killed:\n" + first.stdout.read()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    kill_processes_under(env["RAY_TMPDIR"])  # what the killed driver's local Ray left behind
    partial = read_results(str(out))
    assert 0 < partial.num_rows < ROWS

    second = run_cli(["run", str(config)], env)
    log = second.communicate(timeout=600)[0]
    assert second.returncode == 0, log[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_already_done"] >= partial.num_rows
    assert summary["rows_already_done"] + summary["rows_processed"] == ROWS
    current = read_results(str(out))
    assert sorted(current.column("id").to_pylist()) == [r["id"] for r in rows]
    assert set(current.column("status").to_pylist()) == {"ok"}
    assert not list(out.glob(".part-*.tmp"))

    third = run_cli(["run", str(config)], env)
    log = third.communicate(timeout=600)[0]
    assert third.returncode == 0, log[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert (summary["rows_processed"], summary["rows_already_done"]) == (0, ROWS)
    assert "MapBatches(GenerateStage)" not in log  # no pipeline, no model: nothing was left to do
    assert read_results(str(out)).num_rows == ROWS
