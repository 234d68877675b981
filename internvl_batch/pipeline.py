"""The Ray wiring, in one place: request rows -> CPU actor pool -> GPU actor pool -> result files.

    requests (driver) ─► PrepareStage (CPU actors) ─► GenerateStage (model replicas) ─► write_batch (tasks)
                                                                                         └─► stats to the driver

Stages know nothing of Ray; this module decides resources, pool sizes, batch sizes and fault tolerance
(actor restarts, task retries) from the config. Pixels cross the object store as uint8 bytes.
"""

from __future__ import annotations

import json
import logging

import pyarrow as pa

from internvl_batch.config import JobConfig
from internvl_batch.stages.generate import GenerateStage
from internvl_batch.stages.prepare import PrepareStage
from internvl_batch.stages.write import write_batch

log = logging.getLogger(__name__)

REQUEST_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("row_index", pa.int64()),
    ("source", pa.string()),
    ("media_kind", pa.string()),
    ("media", pa.list_(pa.string())),
    ("question", pa.string()),
    ("task", pa.string()),
    ("tasks", pa.list_(pa.string())),
    ("expression", pa.string()),
    ("bound", pa.list_(pa.float64())),
    ("num_segments", pa.int32()),
    ("error", pa.string()),
])  # fmt: skip

MAX_INPUT_BLOCKS = 20_000


def requests_table(rows: list[dict], passthrough: list[str]) -> pa.Table:
    """Request rows as one Arrow table; pass-through columns keep their type when it is consistent."""
    columns = {f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in REQUEST_SCHEMA}
    table = pa.table(columns, schema=REQUEST_SCHEMA)
    for name in passthrough:
        if name in REQUEST_SCHEMA.names:
            continue
        values = [r.get(name) for r in rows]
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types across rows: keep them as JSON text
            array = pa.array([None if v is None else json.dumps(v, default=str) for v in values], pa.string())
        table = table.append_column(name, array)
    return table


def carried_columns(config: JobConfig) -> list[str]:
    """Manifest columns the pipeline carries: the pass-through ones and the task template's."""
    from internvl_batch.tasks import template_fields

    return list(dict.fromkeys([*config.input.passthrough_columns, *template_fields(config.task.template)]))


def input_blocks(table: pa.Table, rows_per_block: int) -> list[pa.Table]:
    # Small input blocks keep preprocessing balanced across actors and its output (tiles) small in memory.
    rows_per_block = max(rows_per_block, -(-table.num_rows // MAX_INPUT_BLOCKS))
    return [table.slice(start, rows_per_block) for start in range(0, table.num_rows, rows_per_block)] or [table]


def build_dataset(config: JobConfig, rows: list[dict], model_name: str, num_gpus: float, run_id: str):
    """The lazy Ray dataset: writes result files as it runs and yields per-row stats to the driver."""
    import ray.data
    from ray.data import ActorPoolStrategy

    res = config.resources
    # Dead actors (a crash, a lost node) are restarted and their batch redone: Ray Data's actor pools default
    # to unlimited restarts and retries. Other values go through ray_remote_args (deprecated in Ray 2.6x, so
    # only passed when the user asks for them).
    fault_tolerance = {
        key: value
        for key, value in (("max_restarts", res.actor_max_restarts), ("max_task_retries", res.actor_max_task_retries))
        if value != -1
    }
    table = requests_table(rows, carried_columns(config))
    ds = ray.data.from_arrow(input_blocks(table, res.cpu_batch_size * 4))
    ds = ds.map_batches(
        PrepareStage,
        fn_constructor_kwargs={"config": config},
        batch_format="pyarrow",
        batch_size=res.cpu_batch_size,
        compute=ActorPoolStrategy(min_size=res.cpu_actors[0], max_size=res.cpu_actors[1]),
        num_cpus=res.cpus_per_actor,
        **fault_tolerance,
    )
    ds = ds.map_batches(
        GenerateStage,
        fn_constructor_kwargs={"config": config, "model_name": model_name, "run_id": run_id},
        batch_format="pyarrow",
        batch_size=res.gpu_batch_size,
        compute=ActorPoolStrategy(min_size=res.gpu_replicas[0], max_size=res.gpu_replicas[1]),
        num_gpus=num_gpus,
        num_cpus=1,
        **fault_tolerance,
    )
    return ds.map_batches(
        write_batch,
        fn_kwargs={"output_path": config.output.path, "storage": config.storage, "run_id": run_id},
        batch_format="pyarrow",
        batch_size=config.output.rows_per_file,
        num_cpus=0.25,
    )
