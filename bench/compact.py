"""A year of nightly runs, then `compact`: reading the output against reading it after the first night.

    .venv/bin/python bench/compact.py --json compact.json                    # 100k objects, 365 nights
    .venv/bin/python bench/compact.py --objects 2000 --nights 20             # a smoke run

An output is written as a nightly media-library job leaves it (`write_result_file`, one run record per night):
night 1 captions `--objects` images in files of `--rows-per-file` rows (`output.rows_per_file`); each later
night redoes `--changed` of the keys (objects replaced: their new rows supersede the old ones) and adds
`--new` keys, in files of at most `--rows-per-file` rows. Each measurement is a fresh process (its peak RSS is
its own `ru_maxrss`):

- `read_results(OUT)`: every current row (the latest run per key);
- the resume pass: `result_key_rows` over every result file (what each night's scan reads before any work);

after night 1 (the baseline), after the last night, and after `compact_output(OUT)` (one process). Figures:
seconds, peak RSS, result files and stored rows; ratios against night 1, where the goal is "as fast as on the
first day" up to the current rows' own growth (reported as the current-rows ratio).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "internvl-bench-compact"

WRITE = r"""
import sys
import numpy as np
import pyarrow as pa
from internvl_batch.config import StorageConfig
from internvl_batch.output_dir import new_run_id, record_run
from internvl_batch.results import write_result_file

out, first_night, last_night, objects, changed, new, per_file, seed = sys.argv[1], *map(int, sys.argv[2:])
rng = np.random.default_rng(seed)
storage = StorageConfig()

def night_rows(keys, run):
    n = len(keys)
    return pa.table({
        "id": [f"photos/{k // 1000:04d}/img{k:09d}.jpg" for k in keys], "status": ["ok"] * n,
        "task": ["caption"] * n, "response": [f"a photo of object {k}, taken at night; " * 4 for k in keys],
        "media": pa.array([[f"s3://library/photos/img{k:09d}.jpg"] for k in keys], pa.list_(pa.string())),
        "source_version": [f"etag={run[-6:]}{k:x}" for k in keys], "config_fingerprint": ["0f3a9c"] * n,
        "model": ["OpenGVLab/InternVL2_5-4B"] * n, "run_id": [run] * n,
    })

total = objects + max(0, first_night - 2) * new  # keys that exist before `first_night` (night 1 adds `objects`)
for night in range(first_night, last_night + 1):
    run = new_run_id()
    if night == 1:
        keys = np.arange(objects)
    else:
        keys = np.concatenate([rng.choice(total, changed, replace=False), np.arange(total, total + new)])
        total += new
    for start in range(0, len(keys), per_file):
        write_result_file(night_rows(keys[start : start + per_file].tolist(), run), out, storage, run)
    record_run(out, storage, {"run_id": run, "status": "finished", "rows_processed": int(len(keys))})
"""

MEASURE = r"""
import json, resource, sys, time
from internvl_batch.config import StorageConfig
from internvl_batch.results import read_results, result_files, result_key_rows

out, what = sys.argv[1], sys.argv[2]
storage = StorageConfig()
start = time.perf_counter()
if what == "read_results":
    figures = {"current_rows": read_results(out).num_rows}
elif what == "resume_keys":
    files = result_files(out, storage)
    plain, paged = result_key_rows(out, files, storage)
    figures = {"files": len(files), "stored_rows": len(plain) + len(paged)}
else:
    from internvl_batch.compact import compact_output
    figures = compact_output(out, storage)
figures["seconds"] = time.perf_counter() - start
figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(figures))
"""


def run(script: str, *args) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"failed: {proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def measure(out: Path, label: str) -> dict:
    figures = {"read_results": run(MEASURE, out, "read_results"), "resume_keys": run(MEASURE, out, "resume_keys")}
    read, keys = figures["read_results"], figures["resume_keys"]
    print(
        f"{label:<24} files {keys['files']:>6}  stored rows {keys['stored_rows']:>9,}  current {read['current_rows']:>9,}"
        f"  read_results {read['seconds']:6.2f} s {read['peak_rss_mb']:6.0f} MB"
        f"  resume keys {keys['seconds']:6.2f} s {keys['peak_rss_mb']:6.0f} MB",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100_000, help="images captioned on night 1")
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--changed", type=int, default=1000, help="keys redone each later night")
    parser.add_argument("--new", type=int, default=300, help="keys added each later night")
    parser.add_argument("--rows-per-file", type=int, default=1000, help="output.rows_per_file")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    out = args.workdir / "out"
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    shape = (args.objects, args.changed, args.new, args.rows_per_file, 0)
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        run(WRITE, out, 1, 1, *shape)
        result["night_1"] = measure(out, "after night 1")
        started = time.perf_counter()
        run(WRITE, out, 2, args.nights, *shape)
        print(f"wrote nights 2-{args.nights} in {time.perf_counter() - started:.1f} s", flush=True)
        result["last_night"] = measure(out, f"after night {args.nights}")
        result["compaction"] = run(MEASURE, out, "compact")
        c = result["compaction"]
        print(f"compact: {c['files_before']} -> {c['files_after']} files in {c['seconds']:.1f} s, peak RSS "
              f"{c['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
        result["compacted"] = measure(out, "after compaction")
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)
    first = result["night_1"]
    result["over_night_1"] = {
        state: {
            "current_rows": result[state]["read_results"]["current_rows"] / first["read_results"]["current_rows"],
            "read_results_s": result[state]["read_results"]["seconds"] / first["read_results"]["seconds"],
            "resume_keys_s": result[state]["resume_keys"]["seconds"] / first["resume_keys"]["seconds"],
        }
        for state in ("last_night", "compacted")
    }
    print("over night 1:", json.dumps(result["over_night_1"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
