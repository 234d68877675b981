"""What the crash ledger costs the model stage (`generation/crashes.py`, `pipeline/crash_ledger.py`).

    .venv/bin/python bench/crash_ledger.py            # ~1 minute on 2 cores

The model stage (`GenerateStage`, tiny checkpoint, on the CPU) answers the same prepared batch without a ledger
(the baseline) and with the run's ledger actor on a local Ray cluster (one `crashes` call per batch, a `begin`
and an `end` per micro-batch). Rows per second, best of 3, same process and run; ratio with / without. Also the
ledger's own round trip (a `begin` waited for and an `end` sent), which is what a micro-batch pays whatever the
model: on a GPU a micro-batch takes from tens of milliseconds to seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import best_of  # noqa: E402 - after the path is set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--micro-batch-rows", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import tempfile

    import ray

    from internvl_batch.config_loader import load_config
    from internvl_batch.generation.crashes import row_keys
    from internvl_batch.model.tiny import make_tiny_checkpoint
    from internvl_batch.pipeline.crash_ledger import RemoteCrashLedger
    from internvl_batch.stages.generate import GenerateStage
    from internvl_batch.stages.prepare import PrepareStage
    from tests.media import encode, make_photo
    from tests.unit.stages.test_stages import request_table

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "photo.jpg").write_bytes(encode(make_photo(448, 448), "JPEG"))
            config = load_config(
                None,
                base={
                    "input": {"manifests": "m.jsonl"},
                    "output": {"path": str(tmp / "out")},
                    "model": {"path": str(make_tiny_checkpoint(tmp / "ck"))},
                    "generation": {"max_new_tokens": 8},
                    "batching": {"max_batch_rows": args.micro_batch_rows},
                },
            )
            raw = [{"id": f"r{i}", "image": "photo.jpg", "question": f"Question {i}?"} for i in range(args.rows)]
            prepared = next(iter(PrepareStage.from_config(config)(request_table(raw, str(tmp / "m.jsonl"), config))))
            stage = GenerateStage.from_config(config, "tiny")
            ledger = RemoteCrashLedger.start()
            stage(prepared)  # warm-up

            def run(with_ledger: bool):
                stage.crash_ledger = ledger if with_ledger else None
                return best_of(args.runs, lambda: stage(prepared))

            without, with_ledger = run(False), run(True)
            keys = row_keys([f"r{i}" for i in range(args.micro_batch_rows)], ["vqa"] * args.micro_batch_rows)
            start, trips = time.perf_counter(), 200
            for n in range(trips):
                ledger.begin(str(n), keys)
                ledger.end(str(n))
            ledger.crashes(keys)  # waits for the last end
            round_trip_ms = (time.perf_counter() - start) / trips * 1000
    finally:
        ray.shutdown()

    micro_batches = -(-args.rows // args.micro_batch_rows)
    print(f"{args.rows} rows, {micro_batches} micro-batches of {args.micro_batch_rows}, best of {args.runs}")
    print(f"{'':32}{'rows/s':>10}{'ratio':>8}")
    print(f"{'model stage, no ledger':32}{args.rows / without:>10.1f}{1.0:>8.2f}")
    print(f"{'model stage, ledger actor':32}{args.rows / with_ledger:>10.1f}{without / with_ledger:>8.2f}")
    print(f"ledger round trip per micro-batch (begin waited for, end sent): {round_trip_ms:.2f} ms")


if __name__ == "__main__":
    main()
