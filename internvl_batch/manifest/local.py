"""The job's passes over manifests in one process, without Ray: the same functions the workers run
(layout, scan, reduce, read stage), called in a loop. For tests, small tools and benchmarks; the job itself
distributes them (`pipeline/prepass.py`, `pipeline/reading.py`).
"""

from __future__ import annotations

import functools

import pyarrow as pa

from internvl_batch.config import JobConfig
from internvl_batch.done_keys import ResultKeys
from internvl_batch.manifest.files import input_files, plan_read_units
from internvl_batch.manifest.read import unit_layout
from internvl_batch.manifest.requests import TaskAssigner
from internvl_batch.manifest.scan import merge_positions, reduce_partition, scan_unit, unify_types
from internvl_batch.manifest.scan_report import manifest_report
from internvl_batch.stages.read import RequestReader
from internvl_batch.tasks import TaskPrompter, template_fields


def read_manifests(config: JobConfig, done_keys: ResultKeys | None = None, partitions: int = 1):
    """(request table of the rows to do or None, ScanTotals, the summary's manifest report), as the job would
    compute them; fatal manifest problems raise `ConfigError`."""
    files = input_files(config.input, config.storage, config.fetch.max_bytes)
    units = plan_read_units(
        files, config.input.split_bytes, lambda todo: [unit_layout(unit, config.storage) for unit in todo]
    )
    carried = list(dict.fromkeys([*config.input.passthrough_columns, *template_fields(config.task.template)]))
    assigner = TaskAssigner(TaskPrompter(config.task, config.generation.max_new_tokens))
    scans, parts = [], [[] for _ in range(partitions)]
    for unit in units:
        scan, tables, _ = scan_unit(unit, config.storage, assigner, done_keys, carried, partitions)
        scans.append(scan)
        for p, table in enumerate(tables):
            parts[p].append(table)
    reduced = [reduce_partition(*tables) for tables in parts]
    totals = functools.reduce(lambda a, b: a + b, [r[0] for r in reduced])
    report = manifest_report(files, scans, totals, config.input.duplicate_ids)
    drop = merge_positions(*[r[1] for r in reduced])
    types = {name: unify_types([s.passthrough_types[name] for s in scans]) for name in carried}
    reader = RequestReader(config.storage, assigner, types, config.resources.rows_per_block)
    blocks = [block for unit in units for block in reader(unit, done_keys, drop if len(drop) else None)]
    table = pa.concat_tables(blocks) if blocks else None
    return table, totals, report
