"""The read side of the job's pipeline: a Ray Data datasource with one read task per manifest read unit,
yielding request blocks of the rows still to do (`stages.read.RequestReader`).

Kept apart from the model stages (`chain.py`): every Ray worker that runs a read task imports this module,
and must not import torch (~2 s of CPU and a few hundred MB per worker process) that only the actors need.
"""

from __future__ import annotations

import functools
import logging

import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from internvl_batch.config import JobConfig
from internvl_batch.manifest.requests import TaskAssigner
from internvl_batch.manifest.units import ReadUnit
from internvl_batch.pipeline.prepass import ScanResult
from internvl_batch.stages.read import RequestReader
from internvl_batch.tasks import TaskPrompter

try:  # reading must not run far ahead: each queued block costs the driver memory (read_ahead.py)
    from internvl_batch.pipeline.read_ahead import install as bound_read_ahead
except ImportError:  # this Ray Data has no backpressure policy interface
    bound_read_ahead = None

log = logging.getLogger("internvl_batch.pipeline")


def read_unit(unit: ReadUnit, config: JobConfig, passthrough_types, done_ref, drop_ref):
    """One read task: the unit's request blocks, without the rows done (`done_ref`) or dropped as duplicates."""
    done_keys = ray.get(done_ref) if done_ref is not None else None  # mapped from the object store, not copied
    drop = ray.get(drop_ref) if drop_ref is not None else None
    assigner = TaskAssigner(TaskPrompter(config.task, config.generation.max_new_tokens))
    reader = RequestReader(config.storage, assigner, passthrough_types, config.resources.rows_per_block)
    yield from reader(unit, done_keys, drop)


class ManifestDatasource(Datasource):
    """One read task per read unit. Ray Data names its read operator after the class ("ReadManifest"), which
    the read-ahead bound looks for."""

    def __init__(self, config: JobConfig, units: list[ReadUnit], scan: ScanResult, done_ref) -> None:
        self.config, self.units, self.scan, self.done_ref = config, units, scan, done_ref

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        scan = self.scan
        return [
            ReadTask(
                functools.partial(read_unit, unit, self.config, scan.passthrough_types, self.done_ref, scan.drop_ref),
                BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(unit.file.uri,)),
            )
            for unit in self.units
        ]


def read_requests(config: JobConfig, units: list[ReadUnit], todo_rows: int, scan: ScanResult, done_ref):
    """The lazy dataset of request rows still to do in `units` (`todo_rows` of them, from the scan)."""
    # Reading is light next to preprocessing: read tasks reserve no CPU (actors may hold every CPU of a small
    # cluster) and a few run at once.
    # Ray Data coalesces a read task's blocks up to its target block size (128 MiB: often a whole unit of
    # request rows) and splits each by the ratio of the blocks asked for to read tasks; asking for one block
    # per rows_per_block rows to do gives preprocessing actors blocks of about that size.
    blocks = max(len(units), -(-todo_rows // config.resources.rows_per_block))
    ds = ray.data.read_datasource(
        ManifestDatasource(config, units, scan, done_ref),
        num_cpus=0,
        concurrency=min(config.resources.read_tasks, len(units)),
        override_num_blocks=blocks,
    )
    if bound_read_ahead is None:
        log.warning("this Ray Data has no backpressure policy interface: manifest reading may run far ahead")
    else:
        bound_read_ahead(ds.context, "ReadManifest", max(8, 4 * config.resources.cpu_actors[1]))
    return ds
