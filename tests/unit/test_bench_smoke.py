"""The GPU benchmark runs its real code path at tiny sizes on CPU (no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_bench_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "gpu.py"),
        "--tiny",
        "--device",
        "cpu",
        "--rows",
        "2",
        "--max-new-tokens",
        "2",
        "--tiles",
        "1",
        "7",
        "--models",
        "InternVL2_5-4B",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for tiles in ("1_tiles", "7_tiles"):
        row = result["models"]["InternVL2_5-4B"][tiles]
        assert row["ours_images_per_s"] > 0 and row["model_card_images_per_s"] > 0 and row["ceiling_images_per_s"] > 0
