"""Reading a large output as a Ray Dataset, with `read_results`' latest-run-wins rule."""

from __future__ import annotations

import functools

import pyarrow as pa
import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from internvl_batch.config import StorageConfig
from internvl_batch.manifest.scan import merge_positions
from internvl_batch.orphans import orphan_keys, orphaned
from internvl_batch.pipeline.calls import remote
from internvl_batch.pipeline.prepass import MAX_PARTITIONS, RESULT_FILES_PER_TASK
from internvl_batch.results import read_result_file, result_files, result_records, superseded_positions


def _result_records(output_path, files, first, storage, partitions):
    tables = result_records(output_path, files, first, storage, partitions)
    return tables[0] if partitions == 1 else tuple(tables)  # one return value per partition


def _superseded(*tables):
    return superseded_positions(list(tables))


def _read_result_files(output_path, files, first, storage, drop_ref, columns, orphans_ref=None):
    drop = ray.get(drop_ref)
    orphans = ray.get(orphans_ref) if orphans_ref is not None else None
    wanted = columns if orphans is None or columns is None else list(dict.fromkeys([*columns, "id", "task", "page"]))
    for number, file in enumerate(files, start=first):
        table = read_result_file(output_path, file, number, storage, drop, wanted)
        if orphans is not None:
            table = table.filter(pa.array(~orphaned(table, orphans)))
            table = table.select([c for c in columns if c in table.column_names]) if columns is not None else table
        yield table


class ResultFilesDatasource(Datasource):
    """One read task per chunk of result files, each leaving out the rows a later run superseded."""

    def __init__(
        self, output_path: str, chunks: list, storage: StorageConfig, drop_ref, columns, orphans_ref=None
    ) -> None:
        self.output_path = output_path
        self.chunks = chunks  # (number of the first file, its files) per read task
        self.storage = storage
        self.drop_ref = drop_ref  # object ref of the positions of superseded rows
        self.columns = columns
        self.orphans_ref = orphans_ref  # object ref of the orphans' KeySet to leave out, or None

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        return [
            ReadTask(
                functools.partial(
                    _read_result_files,
                    self.output_path,
                    chunk,
                    first,
                    self.storage,
                    self.drop_ref,
                    self.columns,
                    self.orphans_ref,
                ),
                BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None),
            )
            for first, chunk in self.chunks
        ]


def results_dataset(output_path: str, storage=None, columns: list[str] | None = None, drop_orphans: bool = False):
    """The current rows of a job's output as a Ray Dataset (latest run wins, as `read_results`), for outputs
    too large for one process: superseded rows are found by a distributed pass over (id, task, run_id).
    `drop_orphans`: leave out results whose input the latest run no longer had (`orphans.py`)."""
    storage = storage or StorageConfig()
    files = result_files(output_path, storage)  # the listing: one path per result file (~1000 rows each)
    if not ray.is_initialized():
        ray.init()
    chunks = [
        (first, files[first : first + RESULT_FILES_PER_TASK]) for first in range(0, len(files), RESULT_FILES_PER_TASK)
    ]
    partitions = max(1, min(MAX_PARTITIONS, len(chunks)))
    records = remote(_result_records, num_returns=partitions)
    outputs = [records.remote(output_path, chunk, first, storage, partitions) for first, chunk in chunks]
    outputs = [out if isinstance(out, list) else [out] for out in outputs]
    superseded = remote(_superseded)
    drop_ref = remote(merge_positions).remote(*[superseded.remote(*[o[p] for o in outputs]) for p in range(partitions)])
    orphans_ref = remote(orphan_keys).remote(output_path, storage) if drop_orphans else None
    return ray.data.read_datasource(ResultFilesDatasource(output_path, chunks, storage, drop_ref, columns, orphans_ref))
