"""How many CPUs the actor pools reserve, so that every stage of a run can make progress on the cluster it has.

Ray Data starts each actor pool's minimum number of actors before any input arrives, and an actor holds its
CPUs for the whole execution. On a small cluster the preprocessing actors and the model replicas can hold
every CPU, and a stage that needs a CPU task (the input dataset's read tasks in the Python API:
`read_parquet`, `read_images`, `from_huggingface`, ... ask for 1 CPU each) then waits for ever: the actors
wait for its blocks, it waits for their CPUs. So, before the pipeline is built:

- the CPUs the input's tasks need (`input_cpus`: 0 for the job, whose manifest read tasks reserve none; 1 for
  the Python API) are set aside from the cluster's;
- if the pools' minimum sizes do not fit in the rest, each actor's reservation is scaled down by the same
  factor (fractional CPUs: Ray schedules them; the processes share the cores, which is what they would do
  anyway on such a machine), and one line says so;
- if nothing is left at all, the run fails at once, naming the CPUs it needs.

Scaling up beyond the minimum sizes is Ray Data's: its actor autoscaler stays within each operator's resource
budget, so it does not take the CPU the input needs. A cluster that reports no CPUs (an autoscaling cluster
whose workers start from zero) is left alone: its nodes are still to come.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from internvl_batch.errors import ConfigError

log = logging.getLogger("internvl_batch.pipeline")

REPLICA_CPUS = 1.0  # each model replica reserves one CPU for its Python process (tokenising, batching)
API_INPUT_CPUS = 1.0  # a read or map task of a user's dataset asks for one CPU unless told otherwise
GPU_CALL_ROWS = 256  # `resources.gpu_batch_size: auto` where the replicas run on GPUs
CPU_CALL_ROWS = 32  # ... and where they run on the CPU


@dataclass(frozen=True)
class PoolSizes:
    """What the actor pools request: preprocessing actors (min, max) and CPUs each, CPUs per model replica."""

    cpu_actors: tuple[int, int]
    cpus_per_actor: float
    replica_cpus: float = REPLICA_CPUS


def pool_sizes(resources, cluster_cpus: float, input_cpus: float) -> PoolSizes:
    """The pools' CPU requests for a cluster of `cluster_cpus` CPUs of which the input's tasks need
    `input_cpus` (`resources`: the `resources` config section). Raises `ConfigError` when the input's tasks
    would leave no CPU for the actors."""
    asked = PoolSizes(tuple(resources.cpu_actors), resources.cpus_per_actor, REPLICA_CPUS)
    if cluster_cpus <= 0:
        return asked
    least = resources.cpu_actors[0] * resources.cpus_per_actor + resources.gpu_replicas[0] * REPLICA_CPUS
    free = cluster_cpus - input_cpus
    if least <= free:
        return asked
    if free <= 0:
        raise ConfigError(
            f"the Ray cluster has {cluster_cpus:g} CPUs and the input dataset's tasks need {input_cpus:g}: none is "
            f"left for the preprocessing actors and model replicas (they need {least:g} CPUs: "
            f"resources.cpu_actors[0] x resources.cpus_per_actor + {REPLICA_CPUS:g} per model replica); start "
            f"Ray with at least {input_cpus + 1:g} CPUs (ray.init(num_cpus=...))"
        )
    share = free / least
    sized = PoolSizes(asked.cpu_actors, _down(resources.cpus_per_actor * share), _down(REPLICA_CPUS * share))
    log.info(
        "the Ray cluster has %g CPUs%s: preprocessing actors reserve %g CPU and model replicas %g CPU each",
        cluster_cpus,
        f", {input_cpus:g} of them kept for the input's tasks" if input_cpus else "",
        sized.cpus_per_actor,
        sized.replica_cpus,
    )
    return sized


def replica_batch_size(resources, num_gpus: float, model_device: str = "auto") -> int:
    """Rows per call to a model replica: `resources.gpu_batch_size`, or for `auto` 256 where the replicas run
    on GPUs and 32 where they run on the CPU. `num_gpus`: the GPUs each replica reserves
    (`dataset.replica_gpus`: 0 where they run on the CPU); `model_device`: `model.device` (cpu keeps a replica
    on the CPU whatever it reserved)."""
    if resources.gpu_batch_size != "auto":
        return resources.gpu_batch_size
    return GPU_CALL_ROWS if num_gpus > 0 and model_device != "cpu" else CPU_CALL_ROWS


def _down(cpus: float) -> float:
    # Ray counts resources in units of 1/10000: rounded down, the shares never add up to more than is free.
    return math.floor(cpus * 10_000) / 10_000


def cluster_cpus() -> float:
    """The CPUs of the Ray cluster this process is connected to, now."""
    import ray

    return float(ray.cluster_resources().get("CPU", 0))
