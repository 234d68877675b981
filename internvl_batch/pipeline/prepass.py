"""Before any model work, on Ray tasks: read units' layout, the keys already done, and the scan of every
manifest row (counts, duplicate ids, pass-through types, the checksum of the keys to do). The driver gets
per-unit and per-partition summaries and object references, never rows."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from internvl_batch.config import JobConfig
from internvl_batch.done_keys import DoneRule, build_result_keys, latest_rows
from internvl_batch.manifest.files import plan_read_units
from internvl_batch.manifest.read import unit_layout
from internvl_batch.manifest.requests import TaskAssigner
from internvl_batch.manifest.scan import merge_positions, reduce_partition, scan_unit, unify_types
from internvl_batch.manifest.units import ReadUnit
from internvl_batch.orphans import clear_orphan_keys, write_orphan_keys
from internvl_batch.pipeline.calls import get, remote
from internvl_batch.results import result_files, result_key_rows
from internvl_batch.tasks import TaskPrompter

log = logging.getLogger("internvl_batch.pipeline")

SCAN_PARTITION_BYTES = 256 * 2**20  # manifest bytes per id partition of the duplicate check
MAX_PARTITIONS = 64
# Scan outputs (units x partitions) of a job with media roots: Ray keeps a task's return values under 100 KB in
# its caller's (the driver's) memory, so many small partitions of many units add up to the listing's size there.
MEDIA_SCAN_OUTPUTS, MIN_MEDIA_PARTITIONS = 512, 4
RESULT_FILES_PER_TASK = 64


def read_units(config: JobConfig, files) -> list[ReadUnit]:
    """Manifest files -> numbered read units (`files.plan_read_units`); the layouts (line counts, row groups,
    record batches) are read by Ray tasks."""
    layout = remote(unit_layout, num_cpus=0.5)
    return plan_read_units(
        files, config.input.split_bytes, lambda todo: get([layout.remote(u, config.storage) for u in todo])
    )


# --- resume: the keys already done --------------------------------------------------------------------------


def _list_results(output_path, storage):
    return result_files(output_path, storage)


def _result_rows(files, first, count, output_path, storage):
    plain, paged = result_key_rows(output_path, files[first : first + count], storage)
    return latest_rows(plain), latest_rows(paged)  # superseded rows go here, not in the one task that builds


def _length(value) -> int:
    return len(value)


def _build_result_keys(rule, *parts):
    """Parts from `_result_rows` (ordinary rows, PDF page rows) -> the current state per key."""
    return build_result_keys([plain for plain, _ in parts], [paged for _, paged in parts], rule)


def load_done_keys(config: JobConfig, rule: DoneRule | None = None):
    """(object ref of the `ResultKeys` of the output's results under `rule` (default: errors retried as
    `output.retry_errors` says, results of any fingerprint kept), their number of keys); (None, 0) when none."""
    rule = rule or DoneRule(keep=True, retry_errors=config.output.retry_errors)
    files_ref = remote(_list_results, num_cpus=0.25).remote(config.output.path, config.storage)
    count = get(remote(_length, num_cpus=0).remote(files_ref))
    if not count:
        return None, 0
    result_rows = remote(_result_rows, num_cpus=1)  # a tuple each: (ordinary rows, page rows)
    parts = [
        result_rows.remote(files_ref, first, RESULT_FILES_PER_TASK, config.output.path, config.storage)
        for first in range(0, count, RESULT_FILES_PER_TASK)
    ]
    keys_ref = remote(_build_result_keys, num_cpus=1).remote(rule, *parts)
    size = get(remote(_length, num_cpus=0).remote(keys_ref))
    log.info("resume: %d result files hold results of %d (id, task) keys", count, size)
    return (keys_ref, size) if size else (None, 0)


# --- the scan -----------------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    totals: object  # scan.ScanTotals
    units: list  # scan.UnitScan per unit (small)
    passthrough_types: dict
    drop_ref: object | None  # object ref of the positions of duplicate rows to skip, or None
    found_refs: list = field(default_factory=list)  # per unit: object ref of the result indices its rows found


def _scan(unit, config, done_keys, passthrough, partitions):
    assigner = TaskAssigner(TaskPrompter(config.task, config.generation.max_new_tokens))
    scan, tables, found = scan_unit(unit, config.storage, assigner, done_keys, passthrough, partitions)
    return (scan, found, *tables)


def scan_partitions(units: list[ReadUnit]) -> int:
    """How many id partitions the duplicate check has: one per `SCAN_PARTITION_BYTES` of manifests, up to
    `MAX_PARTITIONS`. A media root's size is not known before it is listed: with one, at least
    `MIN_MEDIA_PARTITIONS`, and more while units x partitions stays within `MEDIA_SCAN_OUTPUTS`, so that the
    outputs small enough to be held by the driver are few (a large library's outputs are large: not held)."""
    total_bytes = sum(file.size for file in {u.file.uri: u.file for u in units}.values())  # each file once
    partitions = int(min(MAX_PARTITIONS, max(1, -(-total_bytes // SCAN_PARTITION_BYTES))))
    if any(u.file.media for u in units):
        media = min(MAX_PARTITIONS, max(MIN_MEDIA_PARTITIONS, MEDIA_SCAN_OUTPUTS // len(units)))
        partitions = max(partitions, media)
    return partitions


def scan_manifests(config: JobConfig, units: list[ReadUnit], done_ref, passthrough: list[str]) -> ScanResult:
    partitions = scan_partitions(units)
    scan = remote(_scan, num_cpus=1, num_returns=partitions + 2)
    outputs = [scan.remote(u, config, done_ref, passthrough, partitions) for u in units]
    unit_scans = get([out[0] for out in outputs])
    reduce = remote(reduce_partition, num_cpus=1, num_returns=2)
    reduced = [reduce.remote(*[out[2 + p] for out in outputs]) for p in range(partitions)]
    totals_list = get([r[0] for r in reduced])
    totals = functools.reduce(lambda a, b: a + b, totals_list)
    drop_ref = None
    if totals.duplicate_rows:
        drop_ref = remote(merge_positions, num_cpus=1).remote(*[r[1] for r in reduced])
    types = {name: unify_types([s.passthrough_types[name] for s in unit_scans]) for name in passthrough}
    return ScanResult(totals, unit_scans, types, drop_ref, [out[1] for out in outputs])


def _write_orphans(output_path, storage, run_id, result_keys, *found) -> int:
    orphans = result_keys.missing(*found)
    write_orphan_keys(output_path, storage, orphans, run_id)
    return len(orphans)


def record_orphans(config: JobConfig, done_ref, scan: ScanResult, run_id: str) -> None:
    """Write the keys of the results no row read has (`.internvl-batch/orphans.arrow`, `read_results(...,
    drop_orphans=True)` leaves them out), in a task: the driver holds no keys."""
    if done_ref is None:  # no earlier results (or `resume: false` deleted them): an older list must not stand
        clear_orphan_keys(config.output.path, config.storage)
        return
    write = remote(_write_orphans, num_cpus=1)
    get(write.remote(config.output.path, config.storage, run_id, done_ref, *scan.found_refs))
