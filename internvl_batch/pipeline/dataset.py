"""The job's dataset and the Python API's: the read side (`reading.py`) or a user's rows, then the stage chain
(`chain.py`); and how many GPUs each model replica reserves."""

from __future__ import annotations

import logging

import ray

from internvl_batch.config import JobConfig, PipelineConfig
from internvl_batch.errors import ConfigError
from internvl_batch.manifest.units import ReadUnit
from internvl_batch.pipeline.api_rows import rows_to_requests
from internvl_batch.pipeline.chain import JOB_CHAIN, MODEL_CHAIN, RunValues, apply_chain
from internvl_batch.pipeline.crash_ledger import RemoteCrashLedger
from internvl_batch.pipeline.prepass import ScanResult
from internvl_batch.pipeline.reading import read_requests
from internvl_batch.pipeline.sizing import API_INPUT_CPUS

log = logging.getLogger("internvl_batch.pipeline")


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
    fingerprints: dict[str, str] | None = None,
):
    """The lazy Ray dataset of the job over some read units (`todo_rows` rows to do in them): writes result
    files as it runs and yields one row of counts per file. `crash_ledger`: the run's, shared by its waves
    (one is started if none is given); `fingerprints`: task -> config fingerprint, written in each row."""
    run = RunValues(
        model_name,
        run_id,
        passthrough=dict(config.input.passthrough_columns),
        reserved_gpus=num_gpus,
        crash_ledger=crash_ledger or RemoteCrashLedger.start(),
        fingerprints=fingerprints,
    )
    return apply_chain(read_requests(config, units, todo_rows, scan, done_ref), JOB_CHAIN, config, run)


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
    rows = dataset.map_batches(
        rows_to_requests,
        fn_args=(config.task, config.generation.max_new_tokens, base_location),
        batch_format="pyarrow",
        batch_size=config.resources.rows_per_block,
        num_cpus=0,
    )
    run = RunValues(
        model_name,
        run_id,
        passthrough,
        reserved_gpus=replica_gpus(config),
        crash_ledger=RemoteCrashLedger.start(),
        input_cpus=API_INPUT_CPUS,
    )
    return apply_chain(rows, MODEL_CHAIN, config, run)
