"""Before any model work, on Ray tasks: read units' layout, the keys already done, and the scan of every
manifest row (counts, duplicate ids, pass-through types, the checksum of the keys to do). The driver gets
per-unit and per-partition summaries and object references, never rows."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from internvl_batch.config import JobConfig
from internvl_batch.keys import KeySet, complete_documents
from internvl_batch.manifest.files import plan_read_units
from internvl_batch.manifest.read import unit_layout
from internvl_batch.manifest.requests import TaskAssigner
from internvl_batch.manifest.scan import merge_positions, reduce_partition, scan_unit, unify_types
from internvl_batch.manifest.units import ReadUnit
from internvl_batch.pipeline.calls import get, remote
from internvl_batch.results import result_files, result_key_hashes
from internvl_batch.tasks import TaskPrompter

log = logging.getLogger("internvl_batch.pipeline")

SCAN_PARTITION_BYTES = 256 * 2**20  # manifest bytes per id partition of the duplicate check
MAX_PARTITIONS = 64
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


def _hash_results(files, first, count, output_path, storage, ok_only):
    return result_key_hashes(output_path, files[first : first + count], storage, ok_only)


def _length(value) -> int:
    return len(value)


def _build_keyset(*parts):
    """Parts from `_hash_results`: ordinary keys, and PDF page rows that count once a document is complete."""
    pages = np.concatenate([paged for _, paged in parts]) if parts else np.zeros((0, 6), np.uint64)
    documents = complete_documents(pages[:, 0:2], pages[:, 2:4], pages[:, 4:6])
    return KeySet.build([plain for plain, _ in parts] + [documents])


def load_done_keys(config: JobConfig):
    """(object ref of the KeySet of (id, task) keys already done, their number); (None, 0) when none."""
    files_ref = remote(_list_results, num_cpus=0.25).remote(config.output.path, config.storage)
    count = get(remote(_length, num_cpus=0).remote(files_ref))
    if not count:
        return None, 0
    hash_results = remote(_hash_results, num_cpus=1)  # a tuple each: (ordinary keys, page rows)
    parts = [
        hash_results.remote(
            files_ref, first, RESULT_FILES_PER_TASK, config.output.path, config.storage, config.output.retry_errors
        )
        for first in range(0, count, RESULT_FILES_PER_TASK)
    ]
    keys_ref = remote(_build_keyset, num_cpus=1).remote(*parts)
    size = get(remote(_length, num_cpus=0).remote(keys_ref))
    log.info("resume: %d result files hold %d (id, task) keys already done", count, size)
    return (keys_ref, size) if size else (None, 0)


# --- the scan -----------------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    totals: object  # scan.ScanTotals
    units: list  # scan.UnitScan per unit (small)
    passthrough_types: dict
    drop_ref: object | None  # object ref of the positions of duplicate rows to skip, or None


def _scan(unit, config, done_keys, passthrough, partitions):
    assigner = TaskAssigner(TaskPrompter(config.task, config.generation.max_new_tokens))
    scan, tables = scan_unit(unit, config.storage, assigner, done_keys, passthrough, partitions)
    return (scan, *tables)


def scan_manifests(config: JobConfig, units: list[ReadUnit], done_ref, passthrough: list[str]) -> ScanResult:
    total_bytes = sum(file.size for file in {u.file.uri: u.file for u in units}.values())  # each file once
    partitions = int(min(MAX_PARTITIONS, max(1, -(-total_bytes // SCAN_PARTITION_BYTES))))
    scan = remote(_scan, num_cpus=1, num_returns=partitions + 1)
    outputs = [scan.remote(u, config, done_ref, passthrough, partitions) for u in units]
    unit_scans = get([out[0] for out in outputs])
    reduce = remote(reduce_partition, num_cpus=1, num_returns=2)
    reduced = [reduce.remote(*[out[1 + p] for out in outputs]) for p in range(partitions)]
    totals_list = get([r[0] for r in reduced])
    totals = functools.reduce(lambda a, b: a + b, totals_list)
    drop_ref = None
    if totals.duplicate_rows:
        drop_ref = remote(merge_positions, num_cpus=1).remote(*[r[1] for r in reduced])
    types = {name: unify_types([s.passthrough_types[name] for s in unit_scans]) for name in passthrough}
    return ScanResult(totals, unit_scans, types, drop_ref)
