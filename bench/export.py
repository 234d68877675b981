"""Exports at scale: `internvl-batch export` against reading the whole output (`read_results`), same run.

    .venv/bin/python bench/export.py --rows 100000 1000000 --json export.json
    .venv/bin/python bench/export.py --rows 2000 --formats documents     # a smoke run

An output of N result rows is written once per size under `--workdir` (reused with `--keep`): images with a
caption and a ground row (3 boxes) and PDFs of 5 pages (OCR), ids spread over result files of 50k rows, then a
second run that redoes every tenth key (so the current-row rule has work to do). Each measurement is a fresh
process (its peak RSS is its own `ru_maxrss`):

- the baseline: `read_results(OUT)` (every current row in memory at once, what a hand-written conversion starts
  from) and its peak RSS and seconds;
- each `--formats` export in one process (`--local`).

Figures: seconds, rows/s, peak RSS (MB); ratios export/baseline per size, and the peak RSS of the largest size
over the smallest's (the goal: flat, since an export holds one partition of about 64 MiB of result files).
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
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "internvl-bench-export"
ROWS_PER_FILE = 50_000

WRITE = r"""
import sys
import pyarrow as pa
from internvl_batch.config import StorageConfig
from internvl_batch.output_dir import new_run_id
from internvl_batch.results import write_result_file
from internvl_batch.stages.output import OUTPUT_SCHEMA

out, rows, per_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
BOX = OUTPUT_SCHEMA.field("boxes").type

def rows_of(start, stop, run, every=1):
    ids, tasks, pages, totals, responses, media, boxes = [], [], [], [], [], [], []
    k = start
    while len(ids) < stop - start:
        if k % every == 0:
            if k % 4 == 3:  # a PDF of 5 pages
                for p in range(1, 6):
                    ids.append(f"doc{k:09d}#p{p}"); tasks.append("ocr"); pages.append(p); totals.append(5)
                    responses.append(f"text of page {p} " * 20); media.append([f"s3://b/doc{k}.pdf"]); boxes.append(None)
            else:
                for task in ("caption", "ground"):
                    ids.append(f"img{k:09d}"); tasks.append(task); pages.append(None); totals.append(None)
                    media.append([f"s3://b/img{k}.jpg"])
                    responses.append("a photo of something " * 5 if task == "caption" else "<ref>x</ref>")
                    boxes.append([{"label": "x", "x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0}] * 3 if task == "ground" else None)
        k += 1
    n = stop - start
    ids, tasks, pages, totals, responses, media, boxes = (c[:n] for c in (ids, tasks, pages, totals, responses, media, boxes))
    return pa.table({
        "id": ids, "status": ["ok"] * n, "task": tasks, "response": responses,
        "media": pa.array(media, pa.list_(pa.string())),
        "media_sizes": pa.array([[{"width": 640, "height": 480}]] * n, OUTPUT_SCHEMA.field("media_sizes").type),
        "boxes": pa.array(boxes, BOX), "page": pa.array(pages, pa.int32()), "num_pages": pa.array(totals, pa.int32()),
        "model": ["tiny"] * n, "run_id": [run] * n,
    })

first = new_run_id()
for start in range(0, rows, per_file):
    write_result_file(rows_of(start, min(rows, start + per_file), first), out, StorageConfig(), first)
second = new_run_id()
redo = rows // 10
for start in range(0, redo, per_file):
    write_result_file(rows_of(start, min(redo, start + per_file), second), out, StorageConfig(), second)
"""

MEASURE = r"""
import json, resource, sys, time
from internvl_batch.results import read_results
from internvl_batch.export.options import ExportOptions
from internvl_batch.pipeline.export import export_output

out, what, target = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
if what == "baseline":
    rows = read_results(out).num_rows
    summary = {"rows": rows}
else:
    options = ExportOptions(format=what, out=target, task=None, overwrite=True)
    summary = export_output(out, options, engine="local")
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "summary": summary}))
"""


def run(script: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"failed: {proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="result rows per output")
    parser.add_argument("--formats", nargs="+", default=["label-studio", "documents"])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--keep", action="store_true", help="keep the outputs (reused next time)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"sizes": []}
    try:
        for rows in sorted(args.rows):
            out = args.workdir / f"out-{rows}"
            if not (out / "data").exists():
                started = time.perf_counter()
                run(WRITE, str(out), str(rows), str(ROWS_PER_FILE))
                print(f"wrote {rows} rows in {time.perf_counter() - started:.1f} s", flush=True)
            size = {"rows": rows, "baseline": run(MEASURE, str(out), "baseline", "")}
            for fmt in args.formats:
                target = (
                    args.workdir
                    / f"export-{rows}"
                    / ("text" if fmt == "text" else f"{fmt}.jsonl" if fmt == "documents" else f"{fmt}.json")
                )
                size[fmt] = run(MEASURE, str(out), fmt, str(target))
                base = size["baseline"]
                size[fmt]["seconds_over_baseline"] = size[fmt]["seconds"] / base["seconds"]
                size[fmt]["rss_over_baseline"] = size[fmt]["peak_rss_mb"] / base["peak_rss_mb"]
                print(
                    f"{rows:>9} rows {fmt:<13} {size[fmt]['seconds']:7.1f} s ({size[fmt]['seconds_over_baseline']:.2f}x "
                    f"read_results)  peak RSS {size[fmt]['peak_rss_mb']:7.0f} MB ({size[fmt]['rss_over_baseline']:.2f}x; "
                    f"read_results {base['peak_rss_mb']:.0f} MB in {base['seconds']:.1f} s)",
                    flush=True,
                )
            results["sizes"].append(size)
        if len(results["sizes"]) > 1:
            small, large = results["sizes"][0], results["sizes"][-1]
            results["rss_largest_over_smallest"] = {
                name: large[name]["peak_rss_mb"] / small[name]["peak_rss_mb"] for name in ["baseline", *args.formats]
            }
            print("peak RSS, largest size over smallest:", json.dumps(results["rss_largest_over_smallest"]))
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
