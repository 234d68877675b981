"""The scan's part of the run's summary: what the input held (`manifest_report`, which also refuses what stops a
job before any model work) and what resume found in the output (`resume_report`)."""

from __future__ import annotations

import logging

from internvl_batch.errors import ConfigError
from internvl_batch.manifest.formats import format_of
from internvl_batch.manifest.scan import ScanTotals, UnitScan

log = logging.getLogger("internvl_batch.manifest")


def manifest_report(files: list, unit_scans: list[UnitScan], totals: ScanTotals, duplicate_ids: str) -> dict:
    """The manifests' part of the summary; raises `ConfigError` for what stops a job before any model work:
    a file of free-form rows (a format with `counts_id_field`: JSONL) where no row has an id (unless ids are
    made from line numbers), or duplicate ids when `duplicate_ids` is "error"."""
    rows_by_file: dict[str, list[int]] = {}
    for unit in unit_scans:
        counts = rows_by_file.setdefault(unit.file, [0, 0])
        counts[0] += unit.rows
        counts[1] += unit.rows_with_id_field
    for file in files:
        rows, with_id = rows_by_file.get(file.uri, [0, 0])
        id_field = file.id_field  # None: ids made from line numbers (input.id_column: null)
        if format_of(file).counts_id_field and id_field is not None and rows and not with_id:
            raise ConfigError(
                f"manifest {file.uri}: no row has an `{id_field}` field; set input.id_column to the field that "
                "holds each row's id, or input.id_column: null to name rows `<file>:<line>`"
            )
    if totals.duplicate_ids:
        ids = "1 id appears" if totals.duplicate_ids == 1 else f"{totals.duplicate_ids} ids appear"
        message = f"{ids} more than once (e.g. {', '.join(totals.duplicate_examples[:5])})"
        if duplicate_ids == "error":
            raise ConfigError(f"{message}; set input.duplicate_ids=keep_first to process the first of each")
        log.warning("%s; keeping the first of each (%d rows skipped)", message, totals.duplicate_rows)
    blank = sum(u.blank_lines for u in unit_scans)
    log.info(
        "read %d rows from %d manifest(s) in %d units: %d malformed, %d blank lines skipped, %d duplicate ids",
        totals.rows,
        len(files),
        len(unit_scans),
        totals.malformed_rows,
        blank,
        totals.duplicate_ids,
    )
    return {
        "files": [f.uri for f in files],
        "rows": totals.rows,
        "malformed_rows": totals.malformed_rows,
        "blank_lines": blank,
        "duplicate_ids": totals.duplicate_ids,
        "duplicate_id_examples": totals.duplicate_examples,
        **(
            {
                "media_objects_skipped": sum(u.skipped for u in unit_scans),  # no listed suffix
                "media_folders_unlisted": sum(u.unlisted for u in unit_scans),  # unreadable, symlink loops
            }
            if any(f.media for f in files)
            else {}
        ),
    }


def resume_report(totals: ScanTotals, results: int, stale: frozenset[int], keep: bool) -> dict:
    """The resume part of the summary: `results_orphaned` (results whose (id, task) no input row has now:
    the output's `results` keys minus those the rows read found), results made from another version of their
    media (`results_changed_source`, done again) or with a config the run does not accept (`results_stale_config`);
    a `keep` run's `accepted_fingerprints` (hashes: later runs accept them too)."""
    report = {
        "results_orphaned": max(0, results - totals.found_keys),
        "results_changed_source": totals.changed_keys,
        "results_stale_config": totals.stale_keys,
    }
    if keep and stale:
        report["accepted_fingerprints"] = sorted(stale)
    return report
