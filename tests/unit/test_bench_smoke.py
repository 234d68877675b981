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
