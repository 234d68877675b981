"""The GPU benchmark runs its real code path at tiny sizes on CPU (no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_bench_runs_tiny_on_cpu(tmp_path):
    stops = "forced"  # the default; `--stops limits` shares every other path
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(REPO / "bench" / "gpu.py"), "--model", "OpenGVLab/InternVL2_5-4B", "--tiny"]
    cmd += ["--device", "cpu", "--rows", "4", "--tiles", "7", "--new-tokens", "2,6", "--stops", stops]
    cmd += ["--engines", "generate,static", "--repeats", "1", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for run in result["runs"].values():
        for engine in ("generate", "static", "model card"):
            figures = run["engines"][engine]
            assert "failed" not in figures, figures
            assert figures["images_per_s"] > 0 and figures["tokens"] == sum(run["row_lengths"])
            assert figures.get("rows_off_their_length", 0) == 0


@pytest.mark.slow
def test_listing_bench_runs_tiny(tmp_path):
    """bench/listing.py end to end at toy sizes: a local media root, a first run and a rerun that finds every row
    done. (The manifest baseline and the S3 case run the same measurement on other inputs, read by the job's own
    tests: four more job runs here would only cost time.)"""
    out = tmp_path / "listing.json"
    cmd = [sys.executable, str(REPO / "bench" / "listing.py"), "--local-sizes", "100", "--s3-objects", "0"]
    cmd += ["--baseline-size", "--folders", "5", "--workdir", str(tmp_path / "work"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(out.read_text())
    assert {"local", "s3", "manifest", "setup", "summary", "total_s"} <= set(result)
    cases = result["local"] + result["s3"] + result["manifest"]
    assert [(c["case"], c["objects"]) for c in cases] == [("local media", 100)]
    for case in cases:
        first, rerun = case["first_run"], case["rerun_all_done"]
        for run in (first, rerun):
            assert {"wall_s", "objects_per_s", "driver_peak_rss_mb", "first_result_file_s"} <= set(run)
            assert run["driver_peak_rss_mb"] > 0 and run["one_row_per_input"] is True
        assert (first["rows_written"], first["rows_already_done"]) == (case["objects"], 0)
        assert first["errors_by_stage"] == {"decode": case["objects"]}  # every object listed, fetched, not an image
        assert (rerun["rows_written"], rerun["rows_already_done"]) == (0, case["objects"])
    assert result["summary"]["largest_local_rerun"]["objects"] == 100
    assert not (tmp_path / "work").exists()  # cleaned up without --keep


@pytest.mark.slow
def test_export_bench_runs_tiny(tmp_path):
    """bench/export.py at toy sizes: the output written, the baseline and an export measured per size."""
    out = tmp_path / "export.json"
    cmd = [sys.executable, str(REPO / "bench" / "export.py"), "--rows", "300", "600", "--formats", "documents"]
    cmd += ["--workdir", str(tmp_path / "work"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(out.read_text())
    assert [size["rows"] for size in result["sizes"]] == [300, 600]
    for size in result["sizes"]:
        assert size["baseline"]["summary"]["rows"] == size["rows"]  # a tenth redone: current rows are as many
        assert size["documents"]["summary"]["items"] > 0 and size["documents"]["peak_rss_mb"] > 0
    assert set(result["rss_largest_over_smallest"]) == {"baseline", "documents"}
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_compact_bench_runs_tiny(tmp_path):
    """bench/compact.py at toy sizes: nights written, read before and after a compaction to one file."""
    out = tmp_path / "compact.json"
    cmd = [sys.executable, str(REPO / "bench" / "compact.py"), "--objects", "300", "--nights", "4", "--changed", "20"]
    cmd += ["--new", "5", "--rows-per-file", "100", "--workdir", str(tmp_path / "work"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(out.read_text())
    night, last, compacted = (result[k]["read_results"] for k in ("night_1", "last_night", "compacted"))
    assert (night["current_rows"], last["current_rows"], compacted["current_rows"]) == (300, 315, 315)
    assert result["last_night"]["resume_keys"] == {**result["last_night"]["resume_keys"], "files": 6}
    assert result["compacted"]["resume_keys"]["files"] == 1 and result["compaction"]["files_before"] == 6
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_video_bench_runs_tiny(tmp_path):
    """bench/video.py's speed part at toy sizes: both decoders on both clips, 8 and 32 frames."""
    out = tmp_path / "video.json"
    cmd = [sys.executable, str(REPO / "bench" / "video.py"), "--minutes", "0.05", "--hevc-seconds", "0.5"]
    cmd += ["--tiny", "--skip-memory", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    speed = json.loads(out.read_text())["speed"]
    assert sorted(speed) == ["1080p_h264_0.05min", "4k_hevc_0.5s"]
    for runs in speed.values():
        assert [r["segments"] for r in runs] == [8, 32]
        assert all(r["decord_frames_per_s"] > 0 and r["pyav_frames_per_s"] > 0 for r in runs)
