"""The Ray Data pipeline: the read stage as a datasource, the CPU actor pool, the model replicas, the write
stage; and the same model stages on a user's dataset (the Python API)."""

from __future__ import annotations

import functools
import logging
import os

from internvl_batch.config import JobConfig, PipelineConfig
from internvl_batch.errors import ConfigError
from internvl_batch.manifest.files import ReadUnit
from internvl_batch.pipeline.prepass import ScanResult

log = logging.getLogger("internvl_batch.pipeline")


def _read_unit(unit, config, passthrough_types, done_ref, drop_ref):
    import ray

    from internvl_batch.manifest.requests import TaskAssigner
    from internvl_batch.stages.read import RequestReader
    from internvl_batch.tasks import TaskPrompter

    done_keys = ray.get(done_ref) if done_ref is not None else None  # mapped from the object store, not copied
    drop = ray.get(drop_ref) if drop_ref is not None else None
    assigner = TaskAssigner(TaskPrompter(config.task, config.generation.max_new_tokens))
    reader = RequestReader(config.storage, assigner, passthrough_types, config.resources.rows_per_block)
    yield from reader(unit, done_keys, drop)


def manifest_datasource(config: JobConfig, units: list[ReadUnit], scan: ScanResult, done_ref):
    """A Ray Data datasource with one read task per unit, yielding request blocks of rows still to do."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class ManifestDatasource(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [
                ReadTask(
                    functools.partial(_read_unit, unit, config, scan.passthrough_types, done_ref, scan.drop_ref),
                    BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(unit.file.uri,)),
                )
                for unit in units
            ]

    return ManifestDatasource()


def replica_gpus(config: PipelineConfig) -> float:
    """GPUs per model replica: `model.gpus_per_replica`, or 0 where replicas run on CPU."""
    gpus = _replica_gpus(config)
    if gpus == 0 and config.model.device.startswith("cuda"):
        raise ConfigError(
            f"model.device={config.model.device} but model replicas reserve no GPU "
            f"(resources.accelerator={config.resources.accelerator}); set resources.accelerator=gpu"
        )
    return gpus


def _replica_gpus(config: PipelineConfig) -> float:
    import ray

    choice = config.resources.accelerator
    if choice == "cpu":
        return 0
    gpus = ray.cluster_resources().get("GPU", 0)
    if choice == "gpu":
        if gpus < config.model.gpus_per_replica:
            log.warning("the cluster has %g GPUs now; replicas wait for the autoscaler to add GPU nodes", gpus)
        return config.model.gpus_per_replica
    if not gpus:
        log.warning(
            "no GPUs in the Ray cluster: model replicas run on CPU (set resources.accelerator=gpu on "
            "clusters whose GPU workers scale from zero)"
        )
        return 0
    if gpus < config.model.gpus_per_replica:
        raise ConfigError(f"model.gpus_per_replica={config.model.gpus_per_replica} but the cluster has {gpus:g} GPUs")
    return config.model.gpus_per_replica


def replica_env(num_gpus: float, environ=None) -> dict[str, str]:
    """Environment variables of the model replicas' processes (merged into the job's runtime environment).

    - A replica that reserved no GPU gets `CUDA_VISIBLE_DEVICES=""`: Ray leaves the variable unset for such
      actors, and they would otherwise see (and could allocate on) every GPU of their node.
    - PyTorch's CUDA allocator uses expandable segments unless the job sets its own allocator options: long
      prompts and varying batch shapes otherwise fragment the cache into out-of-memory errors with memory
      free."""
    environ = os.environ if environ is None else environ
    env = {}
    if num_gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if "PYTORCH_CUDA_ALLOC_CONF" not in environ and "PYTORCH_ALLOC_CONF" not in environ:
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    return env


def fault_tolerance(config: PipelineConfig) -> dict:
    # Dead actors (a crash, a lost node) are restarted and their batch redone: Ray Data's actor pools default
    # to unlimited restarts and retries. Other values go through ray_remote_args (deprecated in Ray 2.6x, so
    # only passed when the user asks for them).
    res = config.resources
    pairs = (("max_restarts", res.actor_max_restarts), ("max_task_retries", res.actor_max_task_retries))
    return {key: value for key, value in pairs if value != -1}


def add_model_stages(
    ds,
    config: PipelineConfig,
    model_name: str,
    num_gpus: float,
    run_id: str | None,
    passthrough: list[str],
    crash_ledger=None,
    input_cpus: float = 0.0,
):
    """Request rows -> output rows: the CPU actor pool, then the model replicas. `crash_ledger`: the run's
    (`crash_ledger.RemoteCrashLedger`); one is started if none is given. `input_cpus`: CPUs the stages before
    these need while the actors run (`sizing.py`: the actors' reservations leave them to the input)."""
    from ray.data import ActorPoolStrategy

    from internvl_batch.pipeline.sizing import cluster_cpus, pool_sizes, replica_batch_size

    # Imported here, not with the module: every Ray worker that runs a read or scan task imports this package,
    # and the stages bring torch (~2 s of CPU per worker process) that only the actors need.
    from internvl_batch.stages.columns import check_wiring
    from internvl_batch.stages.generate import GenerateStage
    from internvl_batch.stages.prepare import PrepareStage
    from internvl_batch.stages.read import REQUEST_SCHEMA
    from internvl_batch.stages.write import WriteStage

    check_wiring(REQUEST_SCHEMA.names, [PrepareStage, GenerateStage, WriteStage])
    if crash_ledger is None:
        from internvl_batch.pipeline.crash_ledger import RemoteCrashLedger

        crash_ledger = RemoteCrashLedger.start()
    res = config.resources
    sizes = pool_sizes(res, cluster_cpus(), input_cpus)
    ds = ds.map_batches(
        PrepareStage,
        fn_constructor_kwargs=PrepareStage.sections(config),
        batch_format="pyarrow",
        batch_size=res.rows_per_block,  # the stage works through a block in cpu_batch_size pieces
        compute=ActorPoolStrategy(min_size=sizes.cpu_actors[0], max_size=sizes.cpu_actors[1]),
        num_cpus=sizes.cpus_per_actor,
        resources=res.cpu_actor_resources or None,
        **fault_tolerance(config),
    )
    return ds.map_batches(
        GenerateStage,
        fn_constructor_kwargs={
            **GenerateStage.sections(config),
            "model_name": model_name,
            "run_id": run_id,
            "passthrough": passthrough,
            "reserved_gpus": num_gpus,
            "crash_ledger": crash_ledger,
        },
        batch_format="pyarrow",
        batch_size=replica_batch_size(res, num_gpus, config.model.device),
        compute=ActorPoolStrategy(min_size=res.gpu_replicas[0], max_size=res.gpu_replicas[1]),
        num_gpus=num_gpus,
        num_cpus=sizes.replica_cpus,
        resources=res.replica_resources or None,
        runtime_env={"env_vars": replica_env(num_gpus)},
        **fault_tolerance(config),
    )


def build_dataset(
    config: JobConfig,
    units: list[ReadUnit],
    todo_rows: int,
    scan: ScanResult,
    done_ref,
    model_name: str,
    num_gpus: float,
    run_id: str,
    crash_ledger=None,
):
    """The lazy Ray dataset of the job over some read units (`todo_rows` rows to do in them): writes result
    files as it runs and yields one row of counts per file. `crash_ledger`: the run's, shared by its waves."""
    import ray.data
    from ray.data import ActorPoolStrategy

    from internvl_batch.stages.write import WriteStage

    # Reading is light next to preprocessing: read tasks reserve no CPU (actors may hold every CPU of a small
    # cluster) and a few run at once.
    # Ray Data coalesces a read task's blocks up to its target block size (128 MiB: often a whole unit of
    # request rows) and splits each by the ratio of the blocks asked for to read tasks; asking for one block
    # per rows_per_block rows to do gives preprocessing actors blocks of about that size.
    blocks = max(len(units), -(-todo_rows // config.resources.rows_per_block))
    ds = ray.data.read_datasource(
        manifest_datasource(config, units, scan, done_ref),
        num_cpus=0,
        concurrency=min(config.resources.read_tasks, len(units)),
        override_num_blocks=blocks,
    )
    passthrough = dict(config.input.passthrough_columns)  # manifest column -> output name
    ds = add_model_stages(ds, config, model_name, num_gpus, run_id, passthrough, crash_ledger)
    # A small pool of writer actors: writing a file is short and mostly I/O, so writers reserve no CPU (on a
    # small cluster the CPUs are all held by the other actors), and, being actors, they are not worker
    # processes started afresh for every file, as zero-CPU tasks beyond a node's CPU count would be.
    ds = ds.map_batches(
        WriteStage,
        fn_constructor_kwargs={"output_path": config.output.path, "storage": config.storage, "run_id": run_id},
        batch_format="pyarrow",
        batch_size=config.output.rows_per_file,
        compute=ActorPoolStrategy(min_size=1, max_size=config.resources.write_actors),
        num_cpus=0,
        **fault_tolerance(config),
    )
    try:  # reading must not run far ahead: each queued block costs the driver memory (read_ahead.py)
        from internvl_batch.pipeline.read_ahead import install

        install(ds.context, "ReadManifest", max(8, 4 * config.resources.cpu_actors[1]))
    except ImportError:
        log.warning("this Ray Data has no backpressure policy interface: manifest reading may run far ahead")
    return ds


def build_api_dataset(
    dataset,
    config: PipelineConfig,
    model_name: str,
    run_id: str,
    base_location: str | None,
    passthrough: dict[str, str],
):
    """The Python API's pipeline (`api.Processor`): a user's rows -> request rows -> output rows. The user's
    dataset is read by its own tasks (1 CPU each by default), which the actor pools leave room for.
    `base_location`: what relative media paths resolve against (`api.base_location`)."""
    from internvl_batch.pipeline.api_rows import rows_to_requests
    from internvl_batch.pipeline.sizing import API_INPUT_CPUS

    rows = dataset.map_batches(
        rows_to_requests,
        fn_args=(config.task, config.generation.max_new_tokens, base_location),
        batch_format="pyarrow",
        batch_size=config.resources.rows_per_block,
        num_cpus=0,
    )
    num_gpus = replica_gpus(config)
    return add_model_stages(rows, config, model_name, num_gpus, run_id, passthrough, input_cpus=API_INPUT_CPUS)
