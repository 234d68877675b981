"""What Ray costs on one machine: the whole Ray job against the same stages in a plain loop, same images.

    .venv/bin/python bench/pipeline.py --images 240 --max-new-tokens 8

Both paths use the tiny checkpoint, the same manifest of generated photos (mixed sizes: 1 to 13 tiles) and
the same batch sizes. The plain loop calls PrepareStage then GenerateStage in this process; the Ray path
runs `run_job` (local Ray, CPU actor pool, one model replica, Parquet output). Wall times include model
loading on both sides and Ray's start-up on the Ray side (reported separately too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa
from PIL import Image

SIZES = [(448, 448), (640, 480), (800, 600), (1280, 720), (1000, 250), (300, 900)]


def make_media(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        w, h = SIZES[i % len(SIZES)]
        arr = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
        Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR).save(root / f"img{i:04d}.jpg", quality=85)
        rows.append({"id": f"img{i:04d}", "image": f"img{i:04d}.jpg"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return manifest


def plain_loop(config) -> tuple[float, int]:
    from internvl_batch.manifest.local import read_manifests
    from internvl_batch.pipeline.sizing import replica_batch_size
    from internvl_batch.stages.generate import GenerateStage
    from internvl_batch.stages.prepare import PrepareStage

    t0 = time.perf_counter()
    table, _, _ = read_manifests(config)
    prepare, generate = PrepareStage.from_config(config), GenerateStage.from_config(config, "tiny")
    ok = 0
    on_gpu = generate.predictor.device.type == "cuda"  # the loop's replica: the Ray job's uses the same rule
    step = replica_batch_size(config.resources, 1 if on_gpu else 0, config.model.device)
    for start in range(0, table.num_rows, step):
        chunk = table.slice(start, step)
        out = generate(pa.concat_tables(list(prepare(chunk))))
        ok += sum(1 for s in out.column("status").to_pylist() if s == "ok")
    return time.perf_counter() - t0, ok


def ray_job(config) -> tuple[float, float, int]:
    import ray

    from internvl_batch.job import run_job

    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - t0
    summary = run_job(config)
    wall = time.perf_counter() - t0
    ray.shutdown()
    return wall, startup, summary["rows_ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--cpu-actors", type=int, default=1)
    args = parser.parse_args()

    from internvl_batch.config_loader import load_config

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = make_media(root, args.images)
        base = {
            "input": {"manifests": str(manifest)},
            "output": {"path": str(root / "out"), "resume": False},
            "model": {"path": "tiny"},
            "generation": {"max_new_tokens": args.max_new_tokens},
            "resources": {"cpu_actors": args.cpu_actors, "cpu_batch_size": 8, "gpu_replicas": 1, "gpu_batch_size": 16},
        }
        config = load_config(None, base=base)
        loop_s, loop_ok = plain_loop(config)
        ray_s, startup_s, ray_ok = ray_job(config)
    result = {
        "images": args.images,
        "cpus": os.cpu_count(),
        "plain_loop_s": round(loop_s, 2),
        "plain_loop_rows_per_s": round(loop_ok / loop_s, 3),
        "ray_job_s": round(ray_s, 2),
        "ray_startup_s": round(startup_s, 2),
        "ray_job_rows_per_s": round(ray_ok / ray_s, 3),
        "ray_over_loop_throughput": round((ray_ok / ray_s) / (loop_ok / loop_s), 3),
        "ray_over_loop_throughput_excluding_startup": round((ray_ok / (ray_s - startup_s)) / (loop_ok / loop_s), 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
