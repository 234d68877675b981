"""Run statistics: the write stage's per-file counts, added up on the driver (constant memory), logged as
progress, and turned into the run's summary (`.internvl-batch/summary.json` in the output, see
`output_layout.py`) and the summary printed at the end of a run."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import threading
import time
from collections import Counter
from importlib import metadata

import pyarrow as pa

from internvl_batch.keys import add_checksums
from internvl_batch.redact import redact_text

log = logging.getLogger("internvl_batch.progress")

CRASHED_ROW_ERROR = "generate: ReplicaCrashed"  # rows on which model replicas kept dying (generation/crashes.py)
# The summary's status of a run that finished with such rows (exit code: `output.crashed_rows_exit_code`); the
# other statuses are "ok" and "failed".
CRASHED_ROWS = "ok_with_crashed_rows"

PACKAGES = (
    "internvl-batch",
    "torch",
    "transformers",
    "ray",
    "pyarrow",
    "pillow",
    "tokenizers",
    "s3fs",
    "decord",
    "av",
    "pydantic",
)


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class RunStats:
    def __init__(self, results_to_do: int, progress_every_s: float = 30.0, started: float | None = None) -> None:
        """`started`: the job's start (`time.monotonic()`), so that rates count the job's whole wall time."""
        self.results_to_do = results_to_do
        self.results = 0  # (id, task) results completed (a PDF's: when its last page is written)
        self.rows = 0  # output rows (a PDF has one per page)
        self.ok = 0
        self.errors_by_stage: Counter = Counter()
        self.errors_by_type: Counter = Counter()  # "<stage>: <ErrorType>" -> rows
        self.replica_crashes = 0  # model replica deaths found by the crash ledger (set by the job)
        self.images = 0
        self.tiles = 0
        self.output_tokens = 0
        self.files = 0
        self.first_file_s: float | None = None
        self.checksum = (0, 0)  # of the (id, task) keys written (`stages.write.written_keys`)
        self._started = time.monotonic() if started is None else started
        self._last_log = self._started
        self._every = progress_every_s
        self._lock = threading.Lock()  # `add` (the driver's loop) and the ticker's periodic line

    def add(self, stats: pa.Table) -> None:
        """Add the rows of `stages.write.STATS_SCHEMA` (one per result file)."""
        with self._lock:
            self._add(stats)
        self._log_if_due()

    def _add(self, stats: pa.Table) -> None:
        for row in stats.to_pylist():
            self.rows += row["rows"]
            self.results += row["keys"]
            self.ok += row["ok"]
            self.errors_by_stage.update(json.loads(row["errors_by_stage"]))
            self.errors_by_type.update(json.loads(row["errors_by_type"]))
            self.images += row["images"]
            self.tiles += row["tiles"]
            self.output_tokens += row["output_tokens"]
            self.checksum = add_checksums(self.checksum, (row["keys_high"], row["keys_low"]))
            self.files += 1
            if self.first_file_s is None:
                self.first_file_s = time.monotonic() - self._started

    def _log_if_due(self) -> None:
        # Periodic lines only while work remains: the job logs the last line itself, once, with the summary's rate.
        with self._lock:
            now = time.monotonic()
            if now - self._last_log < self._every or self.results >= self.results_to_do:
                return
            self._last_log = now
        self.log_progress()

    @contextlib.contextmanager
    def ticking(self):
        """Log the progress line every `progress_every_s` while the block runs, also when no result file
        arrives for a while (replicas loading a model, a long first batch): the run's console shows one line
        per interval, not silence."""
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(max(0.05, min(self._every, 1.0))):
                self._log_if_due()

        ticker = threading.Thread(target=tick, name="internvl-batch-progress", daemon=True)
        ticker.start()
        try:
            yield self
        finally:
            stop.set()
            ticker.join()

    def log_progress(self, elapsed: float | None = None) -> None:
        """Log progress; `elapsed` (the job's wall time so far) makes the final line's rate the summary's."""
        with self._lock:
            self._log_progress(elapsed)

    def _log_progress(self, elapsed: float | None) -> None:
        elapsed = time.monotonic() - self._started if elapsed is None else elapsed
        rate = self.rows / elapsed if elapsed else 0.0
        results_rate = self.results / elapsed if elapsed else 0.0
        if self.results >= self.results_to_do:
            left = "done"
        elif results_rate:
            left = f"~{(self.results_to_do - self.results) / results_rate:.0f} s left"
        else:
            left = "time left unknown"
        log.info(
            "progress: %d/%d results written (%d rows: %d ok, %d failed), %.2f rows/s, %s",
            self.results,
            self.results_to_do,
            self.rows,
            self.ok,
            self.rows - self.ok,
            rate,
            left,
        )

    @property
    def failed(self) -> int:
        return self.rows - self.ok

    def as_dict(self, wall_time_s: float) -> dict:
        wall = max(wall_time_s, 1e-9)
        return {
            "results_written": self.results,
            "rows_processed": self.rows,
            "rows_ok": self.ok,
            "rows_failed": self.failed,
            "error_fraction": round(self.failed / self.rows, 6) if self.rows else 0.0,
            "errors_by_stage": dict(self.errors_by_stage),
            "errors_by_type": dict(self.errors_by_type),
            "replica_crashes": self.replica_crashes,
            "rows_crashed": self.errors_by_type.get(CRASHED_ROW_ERROR, 0),
            "images": self.images,
            "tiles": self.tiles,
            "output_tokens": self.output_tokens,
            "result_files": self.files,
            "wall_time_s": round(wall_time_s, 3),
            "rows_per_s": round(self.rows / wall, 3),
            "images_per_s": round(self.images / wall, 3),
            "output_tokens_per_s": round(self.output_tokens / wall, 3),
        }


def print_summary(summary: dict, where: str) -> None:
    lines = [
        f"rows: {summary['rows_ok']} ok, {summary['rows_failed']} failed this run; "
        f"{summary['rows_already_done']} already done; {summary['rows_input']} in manifest(s)",
        f"errors by stage: {summary['errors_by_stage'] or 'none'}",
        *(
            [
                f"model replicas died {summary['replica_crashes']} times; {summary['rows_crashed']} rows on which "
                "they kept dying are errors (generate: ReplicaCrashed)"
            ]
            if summary["replica_crashes"]
            else []
        ),
        f"images: {summary['images']} ({summary['images_per_s']:.2f}/s), output tokens: {summary['output_tokens']} "
        f"({summary['output_tokens_per_s']:.1f}/s), wall time {summary['wall_time_s']:.1f} s",
        f"status: {summary['status']}; summary written to {where}",
    ]
    print(redact_text("\n".join(["== internvl-batch summary =="] + lines)), flush=True)
