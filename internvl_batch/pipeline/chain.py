"""The stage chain as data: which stages run, what each is built from, and how Ray Data runs it.

A `StageSpec` names a stage class, the run values its constructor takes besides its config sections
(`Stage.sections(config)`), and the `map_batches` options of its pool. `apply_chain` checks the columns the
chain reads against the columns it is given (`stages.columns.check_wiring`), then applies every spec with
one `map_batches` call, so the check and the wiring read the same list. Adding a stage is one module under
`stages/` plus one spec here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ray.data import ActorPoolStrategy

from internvl_batch.config import PipelineConfig
from internvl_batch.pipeline.sizing import PoolSizes, cluster_cpus, pool_sizes, replica_batch_size
from internvl_batch.stages.columns import check_wiring
from internvl_batch.stages.generate import GenerateStage
from internvl_batch.stages.prepare import PrepareStage
from internvl_batch.stages.read import REQUEST_SCHEMA
from internvl_batch.stages.write import WriteStage


@dataclass(frozen=True)
class RunValues:
    """What one run adds to the config for its stages (a stage takes the ones its spec names, by name)."""

    model_name: str
    run_id: str | None
    passthrough: dict[str, str]  # manifest column -> output name
    reserved_gpus: float  # GPUs each model replica reserves (0: replicas on CPU)
    crash_ledger: object  # the run's `crash_ledger.RemoteCrashLedger`, shared by its waves
    input_cpus: float = 0.0  # CPUs the stages before the chain need while its actors run (`sizing.py`)
    fingerprints: dict[str, str] | None = None  # task -> the run's config fingerprint (`fingerprint.py`)


Options = Callable[[PipelineConfig, RunValues, PoolSizes], dict]


@dataclass(frozen=True)
class StageSpec:
    """One stage of the chain: the class, the run values its constructor takes, its pool's options."""

    stage: type
    run_values: tuple[str, ...]
    options: Options

    def arguments(self, config: PipelineConfig, run: RunValues) -> dict:
        """The constructor's keyword arguments: the stage's config sections, then its run values."""
        return {**self.stage.sections(config), **{name: getattr(run, name) for name in self.run_values}}


def _prepare_pool(config: PipelineConfig, run: RunValues, sizes: PoolSizes) -> dict:
    res = config.resources
    return {
        "batch_size": res.rows_per_block,  # the stage works through a block in cpu_batch_size pieces
        "compute": ActorPoolStrategy(min_size=sizes.cpu_actors[0], max_size=sizes.cpu_actors[1]),
        "num_cpus": sizes.cpus_per_actor,
        "resources": res.cpu_actor_resources or None,
    }


def _replica_pool(config: PipelineConfig, run: RunValues, sizes: PoolSizes) -> dict:
    res = config.resources
    return {
        "batch_size": replica_batch_size(res, run.reserved_gpus, config.model.device),
        "compute": ActorPoolStrategy(min_size=res.gpu_replicas[0], max_size=res.gpu_replicas[1]),
        "num_gpus": run.reserved_gpus,
        "num_cpus": sizes.replica_cpus,
        "resources": res.replica_resources or None,
        "runtime_env": {"env_vars": replica_env(run.reserved_gpus)},
    }


def _writer_pool(config: PipelineConfig, run: RunValues, sizes: PoolSizes) -> dict:
    # A small pool of writer actors: writing a file is short and mostly I/O, so writers reserve no CPU (on a
    # small cluster the CPUs are all held by the other actors), and, being actors, they are not worker
    # processes started afresh for every file, as zero-CPU tasks beyond a node's CPU count would be.
    return {
        "batch_size": config.output.rows_per_file,
        "compute": ActorPoolStrategy(min_size=1, max_size=config.resources.write_actors),
        "num_cpus": 0,
    }


PREPARE = StageSpec(PrepareStage, (), _prepare_pool)
GENERATE = StageSpec(
    GenerateStage,
    ("model_name", "run_id", "passthrough", "reserved_gpus", "crash_ledger", "fingerprints"),
    _replica_pool,
)
WRITE = StageSpec(WriteStage, ("run_id",), _writer_pool)

MODEL_CHAIN = (PREPARE, GENERATE)  # request rows -> output rows (the Python API returns these)
JOB_CHAIN = (*MODEL_CHAIN, WRITE)  # ... -> one row of counts per result file (the job)


def apply_chain(ds, chain, config: PipelineConfig, run: RunValues, columns=tuple(REQUEST_SCHEMA.names)):
    """`ds` (rows of `columns`) through every stage of `chain`, each as an actor pool. Raises
    `ColumnContractError` before anything is wired when a stage would miss a column."""
    check_wiring(columns, [spec.stage for spec in chain])
    sizes = pool_sizes(config.resources, cluster_cpus(), run.input_cpus)
    for spec in chain:
        ds = ds.map_batches(
            spec.stage,
            fn_constructor_kwargs=spec.arguments(config, run),
            batch_format="pyarrow",
            **spec.options(config, run, sizes),
            **fault_tolerance(config),
        )
    return ds


def fault_tolerance(config: PipelineConfig) -> dict:
    # Dead actors (a crash, a lost node) are restarted and their batch redone: Ray Data's actor pools default
    # to unlimited restarts and retries. Other values go through ray_remote_args (deprecated in Ray 2.6x, so
    # only passed when the user asks for them).
    res = config.resources
    pairs = (("max_restarts", res.actor_max_restarts), ("max_task_retries", res.actor_max_task_retries))
    return {key: value for key, value in pairs if value != -1}


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
