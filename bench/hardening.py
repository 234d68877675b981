"""What the hostile-input guards of issue 26 cost on the paths every row takes.

    .venv/bin/python bench/hardening.py            # ~30 s on 2 cores

Each guard against its own baseline, in the same process and run (best of `--runs`; ratio guarded / baseline):

- redaction of the output's `media` and `error` columns (`stages/output.to_output_table`, Arrow RE2) on a batch
  of `--rows` rows whose media are presigned URLs and half of whose errors quote one, and on one of plain
  `s3://` URIs (nothing to redact); baseline: the same tables built without redaction;
- the local-root check (`local_media.LocalRoots`, a `realpath` per file) on `--files` small local images read by
  the fetcher; baseline: `fetch.local_roots` unset (no root check);
- the size bound on Parquet image cells (`manifest/formats/parquet.py`: footer check, per-cell lengths by Arrow) on a
  manifest of `--rows` embedded images; baseline: the same file read without a limit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import best_of  # noqa: E402 - after the path is set


def redaction(rows: int, runs: int) -> tuple[float, float]:
    import pyarrow as pa

    import internvl_batch.stages.output as output

    url = "https://b.s3.amazonaws.com/photos/{}.jpg?X-Amz-Credential=AKIA%2F1&X-Amz-Date=1&X-Amz-Signature=f00d"
    table = pa.table(
        {
            "id": [str(i) for i in range(rows)],
            "media": [[url.format(i)] for i in range(rows)],
            "error": [
                f"fetch: FetchError: {url.format(i)}: HTTP 404 not found" if i % 2 else None for i in range(rows)
            ],
            "response": ["a caption of some forty characters or so"] * rows,
        }
    )
    plain = table.set_column(1, "media", pa.array([[f"s3://b/photos/{i}.jpg"] for i in range(rows)]))
    plain = plain.set_column(
        2, "error", pa.array([f"fetch: FetchError: s3://b/{i}.jpg: not found" for i in range(rows)])
    )
    guarded = best_of(runs, lambda: output.to_output_table(table, "m", []))
    guarded_plain = best_of(runs, lambda: output.to_output_table(plain, "m", []))
    saved, output.REDACTED_COLUMNS = output.REDACTED_COLUMNS, ()
    try:
        baseline = best_of(runs, lambda: output.to_output_table(table, "m", []))
        baseline_plain = best_of(runs, lambda: output.to_output_table(plain, "m", []))
    finally:
        output.REDACTED_COLUMNS = saved
    return (baseline, guarded), (baseline_plain, guarded_plain)


def local_roots(files: int, runs: int, root: Path) -> tuple[float, float]:
    from internvl_batch.config import FetchConfig, StorageConfig
    from internvl_batch.storage import MediaFetcher
    from tests.media import encode, make_photo

    photos = root / "photos" / "2026" / "12"
    photos.mkdir(parents=True)
    data = encode(make_photo(64, 48), "JPEG")
    paths = []
    for i in range(files):
        (photos / f"{i}.jpg").write_bytes(data)
        paths.append((str(photos / f"{i}.jpg"), "image"))
    plain = MediaFetcher(StorageConfig(), FetchConfig())
    guarded = MediaFetcher(StorageConfig(), FetchConfig(local_roots=[str(root / "other"), str(root / "photos")]))
    baseline = best_of(runs, lambda: plain.fetch_many(paths))
    with_roots = best_of(runs, lambda: guarded.fetch_many(paths))
    assert all(isinstance(v, bytes) for v in guarded.fetch_many(paths))
    return baseline, with_roots


def parquet_cells(rows: int, runs: int, root: Path) -> tuple[float, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from internvl_batch.config import StorageConfig
    from internvl_batch.manifest.files import expand_manifests, number_units, plan_units
    from internvl_batch.manifest.formats.parquet import parquet_row_groups
    from internvl_batch.manifest.read import UnitRows
    from tests.media import encode, make_photo

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    photos = [encode(make_photo(160, 120, seed=i % 16), "JPEG") for i in range(rows)]
    pq.write_table(
        pa.table(
            {
                "id": [f"r{i}" for i in range(rows)],
                "image": pa.array([{"bytes": p, "path": None} for p in photos], image),
            }
        ),
        root / "m.parquet",
        row_group_size=1000,
    )

    def read(limit):
        files = expand_manifests([str(root / "m.parquet")], StorageConfig(), max_media_bytes=limit)
        layouts = {0: parquet_row_groups(files[0].uri, StorageConfig())}
        units = number_units(plan_units(files, 2**30), layouts, 2**30)
        return [row for unit in units for _, row in UnitRows(unit, StorageConfig())]

    baseline = best_of(runs, lambda: read(None))
    guarded = best_of(runs, lambda: read(256 * 2**20))
    return baseline, guarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        presigned, plain = redaction(args.rows, args.runs)
        results = {
            f"output redaction, presigned URLs ({args.rows} rows)": presigned,
            f"output redaction, plain URIs ({args.rows} rows)": plain,
            f"local-root check ({args.files} local files)": local_roots(args.files, args.runs, Path(tmp)),
            f"Parquet cell bound ({args.rows} embedded images)": parquet_cells(args.rows, args.runs, Path(tmp)),
        }
    print(f"{'guard':<52} {'baseline ms':>12} {'guarded ms':>11} {'ratio':>6}")
    for name, (baseline, guarded) in results.items():
        print(f"{name:<52} {baseline * 1e3:>12.1f} {guarded * 1e3:>11.1f} {guarded / baseline:>6.2f}")


if __name__ == "__main__":
    main()
