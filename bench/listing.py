"""Media roots (`input.media`) at library scale: listing on the workers, the scan, resume, the driver's memory.

    .venv/bin/python bench/listing.py --json listing.json          # local 100k and 1M, moto S3 100k, manifest 100k
    .venv/bin/python bench/listing.py --local-sizes 100000 300000 --baseline-size 100000 300000
    .venv/bin/python bench/listing.py --workdir /tmp/listing --keep  # keep the trees; a rerun reuses them
    .venv/bin/python bench/listing.py --local-sizes 200 --s3-objects 50 --baseline-size 200 --folders 10

1. Local: a media root of N files spread over `--folders` subfolders (`root/d000/f0000000.jpg`, ...), each a few
   bytes named *.jpg, so every object is listed, fetched and fails decoding fast (a `decode` error row): what is
   measured is the listing (tasks per unit of first-level folders) and the job's no-model path per row. A tree of
   the same size left under `--workdir` (by `--keep`) is reused.
2. S3: a moto server on 127.0.0.1 (started and stopped by pid here, as tests/integration/conftest.py starts
   one) holding `--s3-objects` objects in `--s3-prefixes` prefixes, uploaded by threads; `input.media` is
   s3://bucket/lib/, the output on the local disk.
3. The baseline, in the same run: the same rows (same ids, paths and versions) as one JSONL manifest
   (`input.manifests` instead of `input.media`) at `--baseline-size`; ratios media/manifest.

Each case runs twice: a first run (every row written) and a rerun (every row already done: error rows count as
done since output.retry_errors is false). The job runs as a user runs it (`internvl-batch run CONFIG`) against a
Ray head started for the benchmark (`ray start --head --block`, 2 CPUs), so that the driver process is only
the driver; its peak RSS is its own `ru_maxrss`. Model `tiny` (random weights), max_new_tokens 1: no row
reaches it. Goals: driver peak RSS of the largest local size within 1.2x the smallest's; a rerun over 1M
objects in under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scale import DRIVER  # noqa: E402  (the driver's subprocess, as bench/scale.py runs it)

from tests.integration.conftest import AWS_ENV, free_port  # noqa: E402
from tests.integration.ray_nodes import RayNode, wait_for_nodes  # noqa: E402

MOTO = (
    "import signal, sys\n"
    "from moto.server import ThreadedMotoServer\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False)\n"
    "server.start()\n"
    "signal.signal(signal.SIGTERM, lambda *_: (server.stop(), sys.exit(0)))\n"
    "signal.pause()\n"
)
CONTENT = b"not a jpeg\n"  # a few bytes: listed, fetched, fails decoding
BUCKET = "listing-bench"
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "internvl-bench-listing"


def spread(n: int, folders: int) -> list[int]:
    """How many of n objects each of `folders` folders holds (as even as possible)."""
    folders = max(1, min(folders, n))
    return [n // folders + (k < n % folders) for k in range(folders)]


def make_tree(work: Path, n: int, folders: int) -> tuple[Path, float | None]:
    """A media root of n few-byte *.jpg files in subfolders, reused when one of that shape is there already
    (its marker is written last): (root, seconds to create it, None when reused)."""
    root, marker = work / f"media-{n}-{folders}", work / f"media-{n}-{folders}.complete"
    if marker.exists() and root.is_dir():
        print(f"-- reusing the tree of {n} files at {root}", flush=True)
        return root, None
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.monotonic()
    flags, number = os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0
    for k, count in enumerate(spread(n, folders)):
        folder = f"{root}/d{k:03d}"
        os.makedirs(folder)
        for _ in range(count):
            fd = os.open(f"{folder}/f{number:07d}.jpg", flags, 0o644)
            os.write(fd, CONTENT)
            os.close(fd)
            number += 1
    marker.write_text(json.dumps({"files": n, "folders": folders}))
    took = time.monotonic() - t0
    print(f"-- created {n} files in {folders} folders in {took:.1f} s ({n / took:,.0f} files/s)", flush=True)
    return root, round(took, 1)


def write_manifest(root: Path, path: Path) -> float:
    """One JSONL manifest of the tree's files: the rows a media root gives (id, image, version), in its order."""
    t0 = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for folder in sorted(os.listdir(root)):
            with os.scandir(root / folder) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    stat = entry.stat()
                    version = f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}"
                    row = {"id": f"{folder}/{entry.name}", "image": os.path.abspath(entry.path), "version": version}
                    f.write(json.dumps(row) + "\n")
    return round(time.monotonic() - t0, 1)


def job_config(path: Path, input_section: dict, output: Path, extra: dict | None = None) -> Path:
    import yaml

    config = {
        "input": input_section,
        "output": {"path": str(output), "max_error_fraction": 1.0, "retry_errors": False},
        "model": {"path": "tiny"},
        "generation": {"max_new_tokens": 1},
        **(extra or {}),
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_driver(config: Path, env: dict, output: Path) -> dict:
    """Run the job's CLI on `config`: wall time, time to the first result file, peak RSS, the summary's counts."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(config)],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = None
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        if first is None and output.exists() and any((output / "data").rglob("part-*.parquet")):
            first = time.monotonic() - t0
        time.sleep(0.2)
    wall = time.monotonic() - t0
    reader.join(timeout=10)
    text = "".join(line for _, line in lines)
    if proc.returncode != 0:
        raise RuntimeError(f"the job failed ({proc.returncode}):\n{text[-4000:]}")
    peak = [line for line in text.splitlines() if line.startswith("PEAK_RSS_KB")]
    from internvl_batch.output_dir import read_summary

    summary = read_summary(output)
    manifest = summary.get("manifest") or {}
    expected = summary["results_expected"]
    return {
        "wall_s": round(wall, 1),
        "first_result_file_s": None if first is None else round(first, 1),
        "objects": expected,
        "objects_per_s": round(expected / wall, 1),
        "driver_peak_rss_mb": round(int(peak[-1].split()[1]) / 1024, 1),
        "rows_written": summary["rows_processed"],
        "rows_already_done": summary["rows_already_done"],
        "one_row_per_input": summary["one_row_per_input"],
        "errors_by_stage": summary.get("errors_by_stage"),
        "results_orphaned": summary.get("results_orphaned"),
        "media_objects_skipped": manifest.get("media_objects_skipped"),
        "media_folders_unlisted": manifest.get("media_folders_unlisted"),
        # the driver's log, each line with the second it came at: where the time went
        "log": [f"{at:7.1f}s {line.rstrip()}" for at, line in lines if not line.startswith("PEAK_RSS_KB")][-60:],
    }


def measure(case: str, objects: int, config: Path, output: Path, env: dict, show_log: bool) -> dict:
    out = {"case": case, "objects": objects}
    shutil.rmtree(output, ignore_errors=True)
    for run in ("first_run", "rerun_all_done"):
        print(f"-- {case}, {objects} objects, {run}", flush=True)
        out[run] = run_driver(config, env, output)
        shown = {k: v for k, v in out[run].items() if k != "log"}
        print(json.dumps(shown), flush=True)
        if show_log:
            print("\n".join(out[run]["log"][-25:]), flush=True)
    shutil.rmtree(output, ignore_errors=True)
    return out


def start_moto(env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", MOTO, str(port)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.2)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (by its pid), then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def upload(endpoint: str, objects: int, prefixes: int, threads: int = 16) -> float:
    """`objects` few-byte *.jpg objects under s3://BUCKET/lib/p000/..., by threads sharing one boto3 client."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=threads, retries={"max_attempts": 10, "mode": "standard"}),
    )
    client.create_bucket(Bucket=BUCKET)
    keys, number = [], 0
    for k, count in enumerate(spread(objects, prefixes)):
        for _ in range(count):
            keys.append(f"lib/p{k:03d}/f{number:07d}.jpg")
            number += 1

    def put(chunk: list[str]) -> None:
        for key in chunk:
            client.put_object(Bucket=BUCKET, Key=key, Body=CONTENT)

    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, [keys[i::threads] for i in range(threads)]))
    took = time.monotonic() - t0
    print(f"-- uploaded {objects} objects in {prefixes} prefixes in {took:.1f} s ({objects / took:,.0f}/s)", flush=True)
    return round(took, 1)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def summarise(results: dict) -> dict:
    runs = ("first_run", "rerun_all_done")
    local = sorted(results["local"], key=lambda r: r["objects"])
    out: dict = {}
    if len(local) > 1:
        small, large = local[0], local[-1]
        label = f"{large['objects']}/{small['objects']}"
        out["local_rss_ratio"] = {
            "sizes": label,
            **{run: ratio(large[run]["driver_peak_rss_mb"], small[run]["driver_peak_rss_mb"]) for run in runs},
            "max_over_runs": ratio(
                max(large[run]["driver_peak_rss_mb"] for run in runs),
                max(small[run]["driver_peak_rss_mb"] for run in runs),
            ),
            "goal": 1.2,
        }
    if local:
        out["largest_local_rerun"] = {
            "objects": local[-1]["objects"],
            "wall_s": local[-1]["rerun_all_done"]["wall_s"],
            "goal_s_at_1M": 120,
        }
    by_size = {r["objects"]: r for r in local}
    out["media_over_manifest"] = []
    for base in results["manifest"]:
        media = by_size.get(base["objects"])
        if media is None:
            continue
        out["media_over_manifest"].append(
            {
                "objects": base["objects"],
                **{
                    f"{run}_{what}": ratio(media[run][what], base[run][what])
                    for run in runs
                    for what in ("wall_s", "driver_peak_rss_mb")
                },
            }
        )
    return out


def save(path: Path | None, results: dict) -> None:
    """The results so far (after each case, so an interrupted run keeps what it measured)."""
    if path:
        path.write_text(json.dumps(results, indent=2))


def table(results: dict) -> str:
    head = "| case | objects | run | wall s | objects/s | first file s | driver peak RSS MB | written | done |"
    lines = [head, "|" + "---|" * 9]
    for group in ("local", "s3", "manifest"):
        for r in results[group]:
            for run, name in (("first_run", "first run"), ("rerun_all_done", "rerun (all done)")):
                m = r[run]
                lines.append(
                    f"| {r['case']} | {r['objects']:,} | {name} | {m['wall_s']} | {m['objects_per_s']:,} | "
                    f"{m['first_result_file_s'] if m['first_result_file_s'] is not None else '-'} | "
                    f"{m['driver_peak_rss_mb']} | {m['rows_written']:,} | {m['rows_already_done']:,} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--folders", type=int, default=1000, help="first-level subfolders of a local root")
    parser.add_argument("--s3-objects", type=int, default=100_000, help="0: no S3 case")
    parser.add_argument("--s3-prefixes", type=int, default=100)
    parser.add_argument("--baseline-size", type=int, nargs="*", default=[100_000], help="manifest baseline sizes")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where the trees and outputs go")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (its trees are reused next time)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--show-log", action="store_true", help="print the tail of each run's driver log")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **AWS_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    results: dict = {"local": [], "s3": [], "manifest": [], "setup": {}, "cpus": args.cpus}
    # the tiny checkpoint is written once, before any timing
    subprocess.run(
        [sys.executable, "-c", "from internvl_batch.model.tiny import tiny_checkpoint_path; tiny_checkpoint_path(0)"],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        check=True,
    )
    head = RayNode(["--head", f"--port={port}", f"--num-cpus={args.cpus}", "--include-dashboard=false"], env, "rlist")
    moto = None
    t_all = time.monotonic()
    try:
        wait_for_nodes(f"127.0.0.1:{port}", 1, env)
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        trees = {}
        for n in sorted(set(args.local_sizes) | set(args.baseline_size)):
            trees[n], took = make_tree(work, n, args.folders)
            results["setup"][f"create_{n}_files_s"] = took
        for n in sorted(args.local_sizes):
            config = job_config(work / f"media-{n}.yaml", {"media": str(trees[n])}, work / f"out-media-{n}")
            results["local"].append(measure("local media", n, config, work / f"out-media-{n}", env, args.show_log))
            save(args.json, results)
        for n in sorted(args.baseline_size):
            manifest = work / f"manifest-{n}" / "rows.jsonl"
            results["setup"][f"manifest_{n}_rows_s"] = write_manifest(trees[n], manifest)
            config = job_config(
                work / f"manifest-{n}.yaml",
                {"manifests": str(manifest)},
                work / f"out-manifest-{n}",
                {"fetch": {"local_roots": [str(trees[n])]}},
            )
            results["manifest"].append(
                measure("JSONL manifest", n, config, work / f"out-manifest-{n}", env, args.show_log)
            )
            save(args.json, results)
        if args.s3_objects:
            moto, endpoint = start_moto(env)
            results["setup"][f"upload_{args.s3_objects}_objects_s"] = upload(
                endpoint, args.s3_objects, args.s3_prefixes
            )
            output = work / f"out-s3-{args.s3_objects}"
            config = job_config(
                work / "s3.yaml",
                {"media": f"s3://{BUCKET}/lib/"},
                output,
                {"storage": {"endpoint_url": endpoint}},
            )
            results["s3"].append(measure("moto S3 media", args.s3_objects, config, output, env, args.show_log))
            save(args.json, results)
    finally:
        if moto is not None:
            stop_process(moto)
        head.stop()
        for path in work.glob("out-*"):
            shutil.rmtree(path, ignore_errors=True)
        if not args.keep:
            t0 = time.monotonic()
            shutil.rmtree(work, ignore_errors=True)
            print(f"-- removed {work} in {time.monotonic() - t0:.1f} s", flush=True)
    results["total_s"] = round(time.monotonic() - t_all, 1)
    results["summary"] = summarise(results)
    save(args.json, results)
    print(table(results))
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
