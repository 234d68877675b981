"""Library scale without model work: how the driver's memory and the pipeline's overhead grow with the rows.

    .venv/bin/python bench/scale.py                                  # 200k and 2M rows, + the baseline at 200k
    .venv/bin/python bench/scale.py --rows 200000 --baseline-ref f86cd8d
    .venv/bin/python bench/scale.py --first-result-only --rows 10000000

Manifests of N rows in 20 JSONL shards whose media are all missing, so every row is a fast `fetch` error: what
is measured is the job's own cost per row (manifest reading, the duplicate check, resume, stages, result
files, the driver). Each size is run twice: a first run (every row written) and a rerun (every row already
done). The job runs as a user runs it (`internvl-batch run`) against a Ray head started for the benchmark
(`ray start --head --block`, 2 CPUs), so that the driver process is only the driver; its peak RSS is its own
`ru_maxrss`. The baseline is an earlier commit (`--baseline-ref`), checked out in a temporary git worktree and
run the same way in the same run, at the smallest size only (it holds every row on the driver).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.ray_nodes import RayNode, wait_for_nodes  # noqa: E402

DRIVER = (
    "import resource, sys\n"
    "from internvl_batch.cli import main\n"
    "code = main(['run', sys.argv[1]])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n"
    "sys.exit(code)\n"
)


def write_manifests(root: Path, rows: int, shards: int = 20) -> str:
    root.mkdir(parents=True, exist_ok=True)
    per = -(-rows // shards)
    for s in range(shards):
        with open(root / f"part-{s:03d}.jsonl", "w") as f:
            for i in range(s * per, min(rows, (s + 1) * per)):
                f.write(f'{{"id": "img-{i:09d}", "image": "media/img-{i:09d}.jpg"}}\n')
    return str(root / "part-*.jsonl")


def job_config(path: Path, manifests: str, output: Path) -> Path:
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "input": {"manifests": manifests},
                "output": {"path": str(output), "max_error_fraction": 1.0},
                "model": {"path": "tiny"},
                "generation": {"max_new_tokens": 8},
            }
        )
    )
    return path


def run_driver(config: Path, env: dict, source: Path, output: Path, stop_at_first_file: bool = False) -> dict:
    """Run the job's CLI from the tree at `source`; time to the first result file, wall time, peak RSS."""
    run_env = {**env, "PYTHONPATH": str(source)}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(config)],
        env=run_env,
        cwd=source,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = None
    lines: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        if first is None and output.exists() and any(output.rglob("part-*.parquet")):
            first = time.monotonic() - t0
            if stop_at_first_file:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait()
    wall = time.monotonic() - t0
    reader.join(timeout=10)
    text = "".join(lines)
    if first is None and output.exists() and any(output.rglob("part-*.parquet")):
        first = wall
    result = {"wall_s": round(wall, 1), "first_result_file_s": None if first is None else round(first, 1)}
    if stop_at_first_file:
        return result
    if proc.returncode != 0:
        raise RuntimeError(f"the job failed ({proc.returncode}):\n{text[-4000:]}")
    peak = [line for line in text.splitlines() if line.startswith("PEAK_RSS_KB")]
    from internvl_batch.output_dir import read_summary  # either layout: a baseline commit writes the legacy one

    summary = read_summary(output)
    result.update(
        driver_peak_rss_mb=round(int(peak[-1].split()[1]) / 1024, 1),
        rows_written=summary["rows_processed"],
        rows_already_done=summary["rows_already_done"],
        rows_per_s=round(summary["rows_processed"] / wall, 1) if summary["rows_processed"] else None,
        rows_checked_per_s=round(summary["results_expected"] / wall, 1),
        one_row_per_input=summary["one_row_per_input"],
    )
    return result


def measure(name: str, source: Path, rows: int, work: Path, env: dict, first_only: bool) -> dict:
    manifests = write_manifests(work / f"manifests-{rows}", rows)
    output = work / f"out-{name}-{rows}"
    config = job_config(work / f"{name}-{rows}.yaml", manifests, output)
    out = {"rows": rows, "impl": name}
    print(f"-- {name}, {rows} rows", flush=True)
    out["first_run"] = run_driver(config, env, source, output, stop_at_first_file=first_only)
    print(json.dumps(out["first_run"]), flush=True)
    if not first_only:
        out["rerun_all_done"] = run_driver(config, env, source, output)
        print(json.dumps(out["rerun_all_done"]), flush=True)
    shutil.rmtree(output, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument(
        "--baseline-ref", default=None, help="git commit to measure as the baseline (smallest size only)"
    )
    parser.add_argument("--first-result-only", action="store_true", help="stop each run at its first result file")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    port = int(
        subprocess.check_output(
            [
                sys.executable,
                "-c",
                "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])",
            ]
        )
    )
    work = Path(tempfile.mkdtemp(prefix="internvl-scale-"))
    worktree = None
    head = RayNode(["--head", f"--port={port}", f"--num-cpus={args.cpus}", "--include-dashboard=false"], env, "rscale")
    results = []
    try:
        wait_for_nodes(f"127.0.0.1:{port}", 1, env)
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        if args.baseline_ref:
            worktree = work / "baseline"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.baseline_ref],
                check=True,
                capture_output=True,
            )
            results.append(
                measure(f"baseline {args.baseline_ref}", worktree, min(args.rows), work, env, args.first_result_only)
            )
        for rows in args.rows:
            results.append(measure("this tree", REPO, rows, work, env, args.first_result_only))
    finally:
        head.stop()
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], capture_output=True
            )
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
