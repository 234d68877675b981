"""`internvl-batch report OUTPUT`: a self-contained HTML page of what a job produced (`output.report: true`
writes `<output>/report.html` at the end of a run). `collect.py` reads the output in bounded memory,
`media.py` makes the thumbnails, `plots.py` the plots, `page.py` the page."""

from __future__ import annotations

from internvl_batch.config import FetchConfig, StorageConfig

REPORT_FILE = "report.html"


def write_report(
    output_path: str,
    storage: StorageConfig | None = None,
    out: str | None = None,
    sample: int = 12,
    max_files: int = 200,
    fetch: FetchConfig | None = None,
) -> str:
    """Write the report of `output_path` to `out` (default `<output>/report.html`, local or object storage);
    returns where it went. `sample`: ok rows per task in the gallery; `max_files`: result files read at most."""
    from internvl_batch.filesystems import fsspec_filesystem
    from internvl_batch.report.collect import collect
    from internvl_batch.report.media import MediaThumbnails
    from internvl_batch.report.page import render

    storage = storage or StorageConfig()
    data = collect(output_path, storage, sample, max_files)
    page = render(data, MediaThumbnails(storage, fetch or FetchConfig()))
    target = out or f"{output_path.rstrip('/')}/{REPORT_FILE}"
    fs, path = fsspec_filesystem(target, storage)
    with fs.open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return target
