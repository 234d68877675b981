"""Interrupted runs and resume, with `internvl-batch run` as users run it, on the tiny checkpoint: Ctrl-C
mid-run exits 130 with one line and the result files written stay; the same command, its driver on a running
Ray cluster (as `ray job submit` runs it), killed with SIGKILL partway; run again (the job, in the test's
process on that cluster), every id exactly once; a fourth run does nothing. The commands print our lines (the
interruption, resuming), not Ray Data's plan and progress blocks or Ray's constructor-arguments error line."""

import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import internvl_batch.job as job
from internvl_batch.config import StorageConfig
from internvl_batch.config_loader import load_config
from internvl_batch.fingerprint import run_records
from internvl_batch.results import read_results
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-m", "internvl_batch.cli"]
ROWS = 16
RAY_NOISE = (
    "logging_progress",  # Ray Data's progress blocks when stdout is not a terminal
    "Running Dataset",
    "Total Progress",
    "Execution plan of Dataset",
    "has constructor arguments in the object store",  # core_worker.cc's error line
    "core_worker.cc",
)


def write_config(tmp_path, checkpoint):
    """A job slow enough to interrupt: 16 photos of 5 tiles each (2x2 and a thumbnail), a result file every 2
    rows (a block of 4 rows takes about a second on CI's CPUs: ample time to interrupt or kill a run after its
    first files)."""
    (tmp_path / "photo.jpg").write_bytes(encode(make_photo(640, 640), "JPEG"))
    lines = [json.dumps({"id": f"r{i:02d}", "image": "photo.jpg"}) for i in range(ROWS)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        "input: {manifests: m.jsonl}\n"
        "output: {path: out, rows_per_file: 2}\n"
        f"model: {{path: {checkpoint}}}\n"
        "generation: {max_new_tokens: 16}\n"
        "resources: {cpu_actors: 1, cpu_batch_size: 2, rows_per_block: 4, gpu_replicas: 1, gpu_batch_size: 2}\n"
    )
    return config


def result_files(tmp_path):
    return glob.glob(str(tmp_path / "out" / "**" / "part-*.parquet"), recursive=True)


def environment(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["INTERNVL_BATCH_CACHE"] = str(tmp_path / "cache")
    return env


@pytest.mark.timeout(900)
def test_ctrl_c_then_a_killed_driver_then_resume_gives_every_id_once(
    ray_local, tmp_path, tiny_checkpoint, monkeypatch, caplog, capsys
):
    import ray

    config = write_config(tmp_path, tiny_checkpoint)
    command = CLI + ["run", str(config)]
    log = tmp_path / "interrupted.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment(tmp_path), cwd=tmp_path)
        try:
            deadline = time.monotonic() + 400
            while not result_files(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert proc.poll() is None, "the run ended before it could be interrupted:\n" + log.read_text()
            assert result_files(tmp_path), "no result file within 400 s:\n" + log.read_text()
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            code = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    kept = result_files(tmp_path)
    assert code == 130, text
    assert text.strip().splitlines()[-1] == (
        f"internvl-batch: interrupted: the result files written so far stay in {tmp_path / 'out'}; run the same "
        "command again to resume (what they hold is not done again)"
    )
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert kept and not any(noise in text for noise in RAY_NOISE), text
    (record,) = run_records(str(tmp_path / "out"), StorageConfig())
    assert record["status"] == "interrupted" and record["error"].startswith("interrupted after"), record

    # The same command again, its driver on the tests' shared cluster (as under `ray job submit`): killed with
    # SIGKILL once it has written more, as when the pod running it is lost (the cluster ends that job's actors).
    env = environment(tmp_path) | {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        killed = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and killed.poll() is None and len(result_files(tmp_path)) < len(kept) + 2:
            time.sleep(0.1)
        assert killed.poll() is None, "the second run ended before it could be killed:\n" + log.read_text()
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    text = log.read_text()
    rows_kept = sum(pq.ParquetFile(path).metadata.num_rows for path in kept)
    assert f"resuming: {rows_kept} of {ROWS} results already exist; {ROWS - rows_kept} to produce" in text, text
    assert not any(noise in text for noise in RAY_NOISE), text  # Ray Data's plan and progress lines start early
    kept = result_files(tmp_path)
    done = sum(pq.ParquetFile(path).metadata.num_rows for path in kept)
    assert rows_kept < done < ROWS

    # Run again, in this process on the same cluster (the command's own lines were checked above): the rest is
    # done, nothing twice.
    with caplog.at_level(logging.INFO, logger="internvl_batch"):
        summary = job.run_job(load_config(str(config)))
    assert (summary["status"], summary["rows_already_done"], summary["rows_processed"]) == ("ok", done, ROWS - done)
    assert f"resuming: {done} of {ROWS} results already exist; {ROWS - done} to produce" in caplog.text
    assert f"progress: {ROWS - done}/{ROWS - done} results written" in caplog.text
    assert "== internvl-batch summary ==" in capsys.readouterr().out
    results = read_results(str(tmp_path / "out"))
    assert sorted(results.column("id").to_pylist()) == [f"r{i:02d}" for i in range(ROWS)]
    assert set(results.column("status").to_pylist()) == {"ok"}
    assert not list((tmp_path / "out").rglob(".part-*.tmp"))

    # A run over a finished output does nothing: no pipeline, no model (seen here, where the pipeline starts).
    pipelines = []
    monkeypatch.setattr(job, "run_pipeline", lambda *args: pipelines.append(args))
    summary = job.run_job(load_config(str(config)))
    assert (summary["rows_processed"], summary["rows_already_done"], pipelines) == (0, ROWS, [])
    assert read_results(str(tmp_path / "out")).num_rows == ROWS
