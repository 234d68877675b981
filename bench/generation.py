"""GPU-stage efficiency on the tiny checkpoint (CPU): batched against one row at a time, and padding waste.

    .venv/bin/python bench/generation.py --rows 48 --max-new-tokens 16

The same prepared rows (a mix of 1-, 7- and 13-tile images in arrival order; short and long questions, or
with `--same-question` one question as in a captioning job) go through the predictor three ways in one run: one row at a time; in length-bucketed micro-batches (the job's
default, padding bound 0.25); and in arrival-order batches of the same size without bucketing (what a
`batch_chat`-style loop does). Reports rows/s and the share of prefill positions that are padding.

    .venv/bin/python bench/generation.py --rows 24 --tasks 3 --max-new-tokens 8

With `--tasks N`, each of the rows is asked N questions (N task rows of one input row, as `task.tasks` makes
them) and the predictor runs them twice in one run: with the vision tower once per image (the job's default,
the task rows share an `image_key`) and once per task row (no sharing, the earlier behaviour). Reports rows/s
and the tiles the vision tower ran on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--same-question", action="store_true", help="every row asks the same question (captioning)")
    parser.add_argument(
        "--tasks", type=int, default=1, help="questions per image: compare vision once per image vs per task"
    )
    args = parser.parse_args()

    import numpy as np

    from internvl_batch.config import BatchingConfig, GenerationConfig, ModelConfig
    from internvl_batch.generation.batching import BatchLimits, padding_fraction, plan_micro_batches
    from internvl_batch.generation.predictor import GenerationRequest, Predictor
    from internvl_batch.imaging import ImagePreprocessor
    from tests.media import encode, make_photo

    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens)
    predictor = Predictor(ModelConfig(path=args.model), generation)
    pre = ImagePreprocessor()
    sizes = {1: (448, 448), 7: (640, 427), 13: (800, 600)}
    images = {tiles: pre(encode(make_photo(*size, seed=tiles), "JPEG")) for tiles, size in sizes.items()}
    rng = np.random.default_rng(0)
    if args.tasks > 1:
        print(json.dumps(compare_shared_vision(predictor, images, rng, args), indent=2))
        return
    requests = []
    for i in range(args.rows):
        image = images[int(rng.choice([1, 7, 13]))]
        long_question = "Please describe the image in detail, with every object and colour."
        question = long_question if args.same_question or i % 2 == 0 else "Describe."
        requests.append(GenerationRequest(predictor.prompts.build(question, [image.num_tiles]).input_ids, image.tiles))
    lengths = [len(r.input_ids) for r in requests]
    tiles = [len(r.tiles) for r in requests]

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    predictor.generate(requests[:2])  # warm-up
    single_s = timed(lambda: [predictor.generate([r]) for r in requests])
    bucketed_s = timed(lambda: predictor.generate(requests))
    limits = BatchLimits(
        predictor.batching.max_batch_rows,
        predictor.batching.max_batch_tokens,
        predictor.batching.max_batch_tiles,
        predictor.batching.max_padding_fraction,
    )
    bucketed_batches = plan_micro_batches(lengths, tiles, args.max_new_tokens, limits)
    width = max(len(b) for b in bucketed_batches)
    arrival = [list(range(i, min(i + width, len(requests)))) for i in range(0, len(requests), width)]
    predictor.batching = BatchingConfig(
        max_batch_rows=width, max_padding_fraction=1.0, max_batch_tiles=10**6, max_batch_tokens=10**9
    )
    arrival_s = timed(lambda: [predictor.generate([requests[i] for i in batch]) for batch in arrival])
    result = {
        "rows": args.rows,
        "questions": "one question for all rows" if args.same_question else "two questions of different lengths",
        "one_at_a_time_rows_per_s": round(args.rows / single_s, 3),
        "bucketed_rows_per_s": round(args.rows / bucketed_s, 3),
        "arrival_order_batches_rows_per_s": round(args.rows / arrival_s, 3),
        "bucketed_over_single": round(single_s / bucketed_s, 2),
        "bucketed_over_arrival_order": round(arrival_s / bucketed_s, 2),
        "padding_bucketed": round(padding_fraction(lengths, bucketed_batches), 3),
        "padding_arrival_order": round(padding_fraction(lengths, arrival), 3),
        "micro_batches_bucketed": len(bucketed_batches),
        "micro_batches_arrival_order": len(arrival),
    }
    print(json.dumps(result, indent=2))


def compare_shared_vision(predictor, images: dict, rng, args) -> dict:
    """The same task rows with the vision tower once per image (shared image_key) and once per task row."""

    from internvl_batch.generation.predictor import GenerationRequest

    questions = [
        "Describe the image.",
        "Read all the text in the image.",
        "What is in the foreground?",
        "What colours dominate?",
        "Is it indoors or outdoors?",
    ]
    picks = [images[int(rng.choice([1, 7, 13]))] for _ in range(args.rows)]

    def task_rows(shared: bool):
        return [
            GenerationRequest(
                predictor.prompts.build(questions[t % len(questions)], [image.num_tiles]).input_ids,
                image.tiles,
                None,
                row if shared else None,
            )
            for row, image in enumerate(picks)
            for t in range(args.tasks)
        ]

    tower = predictor.model.model.get_image_features
    counted = {"tiles": 0}

    def counting(pixel_values, **kwargs):
        counted["tiles"] += int(pixel_values.shape[0])
        return tower(pixel_values=pixel_values, **kwargs)

    predictor.model.model.get_image_features = counting
    predictor.generate(task_rows(True)[:2])  # warm-up
    figures = {}
    for name, shared in (("per_task_row", False), ("once_per_image", True)):
        rows = task_rows(shared)
        counted["tiles"] = 0
        t0 = time.perf_counter()
        predictor.generate(rows)
        seconds = time.perf_counter() - t0
        figures[name] = {
            "task_rows_per_s": round(len(rows) / seconds, 3),
            "vision_tiles": counted["tiles"],
            "s": round(seconds, 2),
        }
    return {
        "images": args.rows,
        "tasks_per_image": args.tasks,
        "max_new_tokens": args.max_new_tokens,
        **figures,
        "speedup": round(figures["per_task_row"]["s"] / figures["once_per_image"]["s"], 2),
        "vision_tiles_ratio": round(
            figures["once_per_image"]["vision_tiles"] / figures["per_task_row"]["vision_tiles"], 3
        ),
    }


if __name__ == "__main__":
    main()
