"""`internvl-batch report OUTPUT`: a self-contained HTML page of what a job produced (`output.report: true`
writes `<output>/.internvl-batch/report.html` at the end of a run). `collect.py` reads the output in bounded
memory (either layout, see `output_layout.py`; it moves nothing), `media.py` makes the thumbnails, `plots.py`
the plots, `page.py` the page."""

from __future__ import annotations

import logging

from internvl_batch.config import FetchConfig, JobConfig, StorageConfig
from internvl_batch.output_dir import report_path, write_output_file
from internvl_batch.report.collect import collect as collect_output  # (the package keeps `collect`: the module)
from internvl_batch.report.media import MediaThumbnails, report_fetch_config
from internvl_batch.report.page import render

log = logging.getLogger("internvl_batch.job")


def write_report(
    output_path: str,
    storage: StorageConfig | None = None,
    out: str | None = None,
    sample: int = 12,
    max_files: int = 200,
    fetch: FetchConfig | None = None,
    local_roots: list[str] | None = None,
) -> str:
    """Write the report of `output_path` to `out` (default `<output>/.internvl-batch/report.html`, also on an
    output of the legacy layout; local or object storage); returns where it went. `sample`: ok rows per task in
    the gallery; `max_files`: result files read at most. Local media are read only under `local_roots`
    (`--local-root`), else `fetch.local_roots` when set, else the roots the output's latest run recorded; with
    none of these, not at all (`media.report_fetch_config`).

    Raises ConfigError (one line) for a path where there is no output, or an output without result files,
    before anything is written."""
    storage = storage or StorageConfig()
    data = collect_output(output_path, storage, sample, max_files)
    fetch = report_fetch_config(output_path, storage, fetch, local_roots)
    page = render(data, MediaThumbnails(storage, fetch))
    target = out or report_path(output_path)
    return write_output_file(target, storage, page)  # a new file renamed over the target: a link is replaced


def write_run_report(config: JobConfig) -> None:
    """`output.report`: the HTML report of the output; a report that cannot be made never fails the job."""
    try:
        where = write_report(config.output.path, config.storage, fetch=config.fetch)
        print(f"report: {where}", flush=True)
    except Exception as exc:  # noqa: BLE001 - the results are written; the report is a view of them
        log.warning("the report could not be written: %s: %s", type(exc).__name__, exc)
    except KeyboardInterrupt:  # Ctrl-C after the job is done stops the report, not the job
        log.warning(
            "the report was not written (interrupted); `internvl-batch report %s` writes it", config.output.path
        )
