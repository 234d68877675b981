"""One output written by two runs of the real job into one output path (the second resumes over a longer
manifest), read by `test_interop_outputs.py` and `test_passthrough_job.py` through the session fixture
`two_runs` (conftest.py): each run costs a pipeline start.

Its rows carry user columns as pass-through columns: `source` and `tasks`, named like the pipeline's own,
`status` renamed (img2dataset writes one), and `width`, int64 in the first run and text in the second ("1200",
and "1000px", which fits no int64: that row is an error row).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from internvl_batch.config_loader import load_config
from internvl_batch.job import run_job
from tests.media import encode, make_photo

ROWS = 6
FIRST_ROWS = 4  # the first run's manifest; the second run's has all ROWS
PASSTHROUGH = {"source": "source", "tasks": "tasks", "status": "download_status", "width": "width"}
USER_COLUMNS = [
    {"source": "laion", "tasks": ["keep"], "status": "success", "width": 320},
    {"source": "coyo", "tasks": [], "status": "success", "width": 640},
    {"source": "laion", "tasks": [], "status": "success", "width": 800},
    {"source": "coyo", "tasks": ["a", "b"], "status": "success", "width": 1024},
    # the second run's rows: widths written as text now, one of them not a number at all
    {"source": "laion", "tasks": ["x"], "status": "success", "width": "1200"},
    {"source": "cc12m", "tasks": [], "status": "failed", "width": "1000px"},
]


@dataclass(frozen=True)
class TwoRuns:
    root: Path  # the manifests, the media and `model` (a link to the tiny checkpoint)
    out: Path
    first: dict  # each run's summary
    second: dict


def job_config(root, out, manifest: str, report: bool):
    return load_config(
        None,
        base={
            "input": {"manifests": str(root / manifest), "passthrough_columns": PASSTHROUGH},
            "output": {"path": str(out), "rows_per_file": 2, "report": report, "max_error_fraction": 1.0},
            "model": {"path": str(root / "model")},
            "generation": {"max_new_tokens": 4},
            "resources": {"cpu_actors": 1, "cpu_batch_size": 2, "gpu_replicas": 1, "gpu_batch_size": 2},
        },
    )


def write_two_runs(root: Path, checkpoint: Path) -> TwoRuns:
    """Two runs of the real job into `root/out`: the first over FIRST_ROWS rows, the second (with the report)
    over all ROWS."""
    os.symlink(checkpoint, root / "model")
    rows = []
    for i, columns in enumerate(USER_COLUMNS):
        (root / f"{i}.jpg").write_bytes(encode(make_photo(64, 64, seed=i), "JPEG"))  # one tile: quick
        rows.append({"id": f"img{i}", "image": f"{i}.jpg", **columns})
    (root / "first.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:FIRST_ROWS]))
    (root / "all.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = root / "out"
    first = run_job(job_config(root, out, "first.jsonl", report=False))
    second = run_job(job_config(root, out, "all.jsonl", report=True))
    assert (first["rows_processed"], second["rows_already_done"], second["rows_processed"]) == (4, 4, 2)
    return TwoRuns(root, out, first, second)
