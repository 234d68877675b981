"""CPU preprocessing: images per second per core, ours (exact and fast) against the reference recipe.

    .venv/bin/python bench/preprocess.py                  # full run (~3 minutes on 2 cores)
    .venv/bin/python bench/preprocess.py --quick          # tiny images, a few seconds: a smoke run
    .venv/bin/python bench/preprocess.py --json out.json  # also write every number as JSON

Same encoded images for every method: generated photo-like pictures (smooth shading, hard-edged shapes,
fine texture, mild noise) of 0.3, 2 and 12 megapixels, portrait 3:4 and panorama 3:1, and a grey A4 scan,
each as JPEG (quality 90) and PNG.
One process, one thread (torch, OpenMP and BLAS limited to one thread before torch is imported).

Methods, all from the encoded bytes:
- reference: the published recipe written out (PIL open + convert('RGB'), resize to the grid with Pillow's
  default resample, row-major crops, thumbnail of the original appended, per tile ToTensor + Normalize to
  float32, torch.stack);
- floor: decode + the two resizes alone (grid, and thumbnail when there is one), nothing else: exact mode's
  unavoidable work;
- exact / fast: `ImagePreprocessor(mode=...)` with its defaults (EXIF on; the images have no EXIF).

Times are CPU time of this process (time.process_time, so other processes on the machine barely disturb them),
the best of several interleaved rounds; img/s = 1 / that time, i.e. per core. Exact mode is checked against
the reference (normalised on the CPU, max difference <= 1e-6) before anything is timed, and fast mode's
tiles are compared with exact mode's: max and mean absolute difference in uint8 levels over all tiles.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from internvl_batch.generation.pixels import normalize_tiles  # noqa: E402
from internvl_batch.imaging import ImagePreprocessor  # noqa: E402
from internvl_batch.imaging.decode import decode_pixels  # noqa: E402
from internvl_batch.imaging.fast import decode_size  # noqa: E402
from internvl_batch.imaging.tiling import TILE_SIZE, plan_tiles  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_recipe import reference_recipe  # noqa: E402

torch.set_num_threads(1)


# (label, width, height): 0.3 / 2 / 12 MP photos, plus portrait 3:4 and panorama 3:1.
FULL_SIZES = [
    ("0.3MP 4:3", 640, 480),
    ("2MP 16:9", 1920, 1080),
    ("12MP 4:3", 4000, 3000),
    ("12MP 3:4 portrait", 3000, 4000),
    ("2MP 3:4 portrait", 1200, 1600),
    ("8.7MP 3:1 panorama", 5100, 1700),
    ("A4 scan 300dpi, grey", 2480, 3508),
]
QUICK_SIZES = [("tiny 4:3", 160, 120), ("small 16:9", 480, 270), ("small 3:1", 1500, 500), ("strip 1:4", 900, 3600)]
FORMATS = ("JPEG", "PNG")


def decode_and_resizes(data: bytes) -> None:
    """Exact mode's floor: decode, then the grid resize and the thumbnail resize, nothing else."""
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode != "RGB":
        image = image.convert("RGB")
    plan = plan_tiles(*image.size)
    image.resize((TILE_SIZE * plan.cols, TILE_SIZE * plan.rows))
    if plan.thumbnail:
        image.resize((TILE_SIZE, TILE_SIZE))


def make_image(label: str, width: int, height: int, seed: int) -> Image.Image:
    photo = make_photo(width, height, seed)
    return photo.convert("L") if "grey" in label else photo


def make_photo(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic photo-like RGB image: smooth shading, hard-edged shapes, fine texture and noise."""
    rng = np.random.default_rng(seed)
    # Smooth colour field (sky, walls, skin): a coarse random grid upsampled bicubically.
    coarse = rng.integers(30, 226, (max(2, height // 160), max(2, width // 160), 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    # Objects with hard edges: rectangles, ellipses and lines in random colours.
    draw = ImageDraw.Draw(image)
    scale = (width + height) / 2
    for _ in range(40):
        x0, y0 = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        w, h = rng.uniform(0.02, 0.3) * scale, rng.uniform(0.02, 0.3) * scale
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(3)
        if shape == 0:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        elif shape == 1:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.line((x0, y0, x0 + w, y0 + h), fill=colour, width=max(1, int(scale / 300)))
    arr = np.asarray(image).astype(np.int16)
    # Fine texture (foliage, fabric) in part of the frame, and sensor-like noise everywhere.
    y, x = np.ogrid[0:height, 0:width]
    texture = (((x // 3 + y // 3) % 2) * 24 - 12).astype(np.int16)
    arr[:, : width // 3] += texture[:, : width // 3, None]
    arr += rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def cpu_times(functions: dict, data: bytes, rounds: int, min_seconds: float) -> dict[str, list[float]]:
    """Interleaved rounds (every method once per round), at least `rounds` and at least `min_seconds` of CPU."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    spent = 0.0
    done = 0
    while done < rounds or spent < min_seconds:
        for name, fn in functions.items():
            start = time.process_time()
            fn(data)
            elapsed = time.process_time() - start
            times[name].append(elapsed)
            spent += elapsed
        done += 1
        if done >= 4 * rounds:
            break
    return times


def run_case(label: str, width: int, height: int, fmt: str, rounds: int, min_seconds: float, seed: int) -> dict:
    data = encode(make_image(label, width, height, seed), fmt)
    exact = ImagePreprocessor(mode="exact")
    fast = ImagePreprocessor(mode="fast")

    ref = reference_recipe(data)
    ours = exact(data)
    fast_out = fast(data)
    if ours.tiles.shape[0] != ref.shape[0] or fast_out.tiles.shape != ours.tiles.shape:
        counts = f"reference {ref.shape[0]}, exact {ours.tiles.shape[0]}, fast {fast_out.tiles.shape[0]}"
        raise AssertionError(f"{label} {fmt}: tile counts differ: {counts}")
    exact_err = torch.max(torch.abs(normalize_tiles(ours.tiles) - ref)).item()
    if exact_err > 1e-6:
        raise AssertionError(f"{label} {fmt}: exact mode differs from the reference recipe by {exact_err}")
    diff = np.abs(fast_out.tiles.astype(np.int16) - ours.tiles.astype(np.int16))
    # The size fast mode decodes at (smaller than the image where a JPEG draft applies).
    fast_decoded = decode_pixels(
        data, True, fast.max_pixels, keep_grey=True, min_size=lambda w, h: decode_size(fast.plan(w, h))
    )

    functions = {
        "reference": reference_recipe,
        "floor": decode_and_resizes,
        "exact": exact,
        "fast": fast,
    }
    times = cpu_times(functions, data, rounds, min_seconds)
    best = {name: min(ts) for name, ts in times.items()}
    return {
        "case": label,
        "format": fmt,
        "width": width,
        "height": height,
        "megapixels": round(width * height / 1e6, 2),
        "file_bytes": len(data),
        "grid": [ours.plan.cols, ours.plan.rows],
        "tiles": ours.num_tiles,
        "rounds": len(times["exact"]),
        "best_s": best,
        "median_s": {name: statistics.median(ts) for name, ts in times.items()},
        "img_per_s": {name: 1.0 / t for name, t in best.items()},
        "exact_vs_reference": best["reference"] / best["exact"],
        "exact_vs_floor": best["exact"] / best["floor"],
        "fast_vs_reference": best["reference"] / best["fast"],
        "fast_vs_exact": best["exact"] / best["fast"],
        "fast_decoded_size": list(fast_decoded.image.size),
        "fast_max_abs_dev": int(diff.max()),
        "fast_mean_abs_dev": float(diff.mean()),
        "fast_share_changed": float((diff > 0).mean()),
        "bytes_uint8": int(ours.tiles.nbytes),
        "bytes_float32": int(ref.numel() * ref.element_size()),
        "exact_max_diff_normalised": exact_err,
    }


def render(results: list[dict]) -> str:
    head = (
        "| image | format | tiles | reference img/s | exact img/s | exact / reference | floor img/s "
        "| exact time / floor "
        "| fast img/s | fast / reference | fast decodes at | fast dev. max / mean | MB uint8 / float32 |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in results:
        ips = r["img_per_s"]
        lines.append(
            f"| {r['case']} ({r['width']}x{r['height']}) | {r['format']} | {r['tiles']} | {ips['reference']:.1f} | "
            f"{ips['exact']:.1f} | {r['exact_vs_reference']:.2f}x | {ips['floor']:.1f} | {r['exact_vs_floor']:.2f} | "
            f"{ips['fast']:.1f} | {r['fast_vs_reference']:.2f}x | {'x'.join(map(str, r['fast_decoded_size']))} | "
            f"{r['fast_max_abs_dev']} / {r['fast_mean_abs_dev']:.3f} | "
            f"{r['bytes_uint8'] / 1e6:.1f} / {r['bytes_float32'] / 1e6:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small images, few rounds: a smoke run, not a measurement")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per image (default 7; 2 --quick)")
    parser.add_argument("--min-seconds", type=float, default=None, help="CPU seconds per image, at least (default 3)")
    parser.add_argument("--only", default=None, help="run only the cases whose label contains this text")
    parser.add_argument("--json", type=Path, default=None, help="write the results (and the machine) to this JSON file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 7)
    min_seconds = args.min_seconds if args.min_seconds is not None else (0.0 if args.quick else 3.0)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES

    results = []
    for seed, (label, width, height) in enumerate(sizes):
        if args.only and args.only not in label:
            continue
        for fmt in FORMATS:
            result = run_case(label, width, height, fmt, rounds, min_seconds, seed)
            results.append(result)
            ips = result["img_per_s"]
            print(
                f"{label:>20} {fmt:4}: reference {ips['reference']:6.1f}  exact {ips['exact']:6.1f}  "
                f"floor {ips['floor']:6.1f}  fast {ips['fast']:6.1f} img/s; "
                f"fast dev max {result['fast_max_abs_dev']} mean {result['fast_mean_abs_dev']:.3f}",
                flush=True,
            )
    print()
    print(render(results))
    if args.json:
        machine = {
            "python": platform.python_version(),
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        }
        args.json.write_text(json.dumps({"machine": machine, "quick": args.quick, "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
