"""PDF pages: our rendering rule (cover the tile grid, no more) against rendering at a fixed DPI, and against
the same page as a JPEG (what a pipeline that receives page images pays).

    .venv/bin/python bench/documents.py            # ~1 minute on 2 cores

A 10-page scanned-style A4 PDF (one 150 DPI image per page, as scanners write) is opened, every page rendered
and cut into tiles (exact mode, max_num 12) by: (a) `PdfRenderer` (the job's path: 951 x 1344 pixels an A4
page); (b) the same pages rendered at 150 and 300 DPI (1240 x 1754 and 2480 x 3508 pixels), then tiled as
images; (c) the pages as 150 DPI JPEGs, decoded and tiled. Pages per second, best of 3, one process, same run;
ratios against (b) at 150 DPI. All paths give the same grid (2 x 3 + thumbnail).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import best_of  # noqa: E402 - after the path is set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import pypdfium2

    from internvl_batch.imaging import ImagePreprocessor
    from internvl_batch.imaging.document import PdfRenderer
    from tests.media import encode, encode_pdf, scanned_page

    pages = [scanned_page(n % 12 + 1) for n in range(args.pages)]
    pdf = encode_pdf(pages)
    jpegs = [encode(p, "JPEG", quality=90) for p in pages]
    tiler = ImagePreprocessor()
    renderer = PdfRenderer(1, 12, 1000)
    tiles_seen = set()

    def ours():
        for page in renderer.pages(renderer.open(pdf)):
            tiles_seen.add(("ours", tiler.process_image(page.image).num_tiles, page.image.size))

    def at_dpi(dpi: int):
        def work():
            document = pypdfium2.PdfDocument(pdf)
            for index in range(len(document)):
                image = document[index].render(scale=dpi / 72).to_pil().convert("RGB")
                tiles_seen.add((dpi, tiler.process_image(image).num_tiles, image.size))
            document.close()

        return work

    def jpeg():
        for data in jpegs:
            tiles_seen.add(("jpeg", tiler(data).num_tiles, None))

    results = {
        "ours (cover the grid)": best_of(args.runs, ours),
        "fixed 150 DPI": best_of(args.runs, at_dpi(150)),
        "fixed 300 DPI": best_of(args.runs, at_dpi(300)),
        "150 DPI JPEG pages": best_of(args.runs, jpeg),
    }
    base = results["fixed 150 DPI"]
    print(f"{args.pages} A4 pages, best of {args.runs}; tiles/size seen: {sorted(tiles_seen, key=str)}")
    print("| path | pages/s | time vs fixed 150 DPI |")
    print("|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {args.pages / seconds:.1f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
