"""What decoding in a child process costs (`preprocess.isolate_decoding`, `stages/isolated_decoder.py`).

    .venv/bin/python bench/decoder_isolation.py            # ~1 minute on 2 cores

The CPU stage's decoding, row by row, in the actor (`MediaDecoder`, the baseline) and through the decoder process
(`IsolatedDecoder`: the encoded bytes go to the child, the tiles come back as bytes): photos (1280 x 960 JPEG, 13
tiles each), small photos (448 x 448 JPEG, 1 tile: the per-row overhead shows most here), a 2-page scanned PDF
and an 8-frame video. Both paths end with the row's pixels as bytes (the baseline's `tiles.tobytes()`, the
isolated path's received bytes), as the stage does. Rows per second, best of 3, same process and run; ratio
isolated / in the actor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import best_of  # noqa: E402 - after the path is set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import tempfile

    from internvl_batch.config import PreprocessConfig, VideoConfig
    from internvl_batch.model.checkpoint import read_checkpoint_info
    from internvl_batch.model.tiny import make_tiny_checkpoint
    from internvl_batch.stages.isolated_decoder import IsolatedDecoder
    from internvl_batch.stages.media import MediaDecoder
    from tests.media import encode, encode_pdf, encode_video, make_photo, scanned_page

    with tempfile.TemporaryDirectory() as tmp:
        info = read_checkpoint_info(make_tiny_checkpoint(Path(tmp) / "ck"))
        pre, video = PreprocessConfig(), VideoConfig()
        in_actor = MediaDecoder(pre, video, info)
        isolated = IsolatedDecoder(pre, video, info)
        workloads = {
            "photo 1280x960 (13 tiles)": [
                ("image", encode(make_photo(1280, 960, seed=i), "JPEG")) for i in range(args.rows)
            ],
            "photo 448x448 (1 tile)": [
                ("image", encode(make_photo(448, 448, seed=i), "JPEG")) for i in range(args.rows)
            ],
            "PDF, 2 scanned pages": [("document", encode_pdf([scanned_page(1), scanned_page(2)]))] * 4,
            "video, 8 frames": [("video", encode_video(96, 24.0))] * 4,
        }

        def run(decoder, rows):
            for kind, data in rows:
                fetched = {"u": data}
                if kind == "document":
                    _, pages = decoder.document("u", fetched)
                    pixels = [p.media.pixels or p.media.tiles.tobytes() for p in pages]
                else:
                    decoded = decoder.decode(["u"], kind, None, None, fetched)
                    pixels = decoded.pixels or decoded.tiles.tobytes()
                del pixels

        print(f"{'workload':28s} {'in actor rows/s':>16s} {'isolated rows/s':>16s} {'ratio':>6s}")
        run(isolated, workloads["photo 448x448 (1 tile)"][:1])  # start the child before timing
        for name, rows in workloads.items():
            base = len(rows) / best_of(args.runs, lambda rows=rows: run(in_actor, rows))
            iso = len(rows) / best_of(args.runs, lambda rows=rows: run(isolated, rows))
            print(f"{name:28s} {base:16.1f} {iso:16.1f} {iso / base:6.2f}")
        isolated.close()


if __name__ == "__main__":
    main()
