"""The run's crash ledger (`generation/crashes.py`) as a Ray actor, and the client the model replicas call.

One small actor per run, started by the driver (no CPU reserved): the record of what a replica has in flight
must outlive the replica. Its calls are synchronous where the order matters: a micro-batch starts only once
its rows are recorded.
"""

from __future__ import annotations

import logging

import ray

from internvl_batch.generation.crashes import CrashLedger

log = logging.getLogger("internvl_batch.pipeline")


class RemoteCrashLedger:
    """`CrashLedger`'s interface over its actor (picklable: the model replicas get it as a constructor
    argument). If the actor cannot be reached, rows go on without crash tracking rather than failing."""

    def __init__(self, handle) -> None:
        self.handle = handle

    @classmethod
    def start(cls) -> RemoteCrashLedger:
        # Restarted (empty) if its node is lost: crash records are lost, not the job.
        actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(CrashLedger)
        return cls(actor.remote())

    def crashes(self, keys: list[str]) -> dict[str, int]:
        return self._call("crashes", keys) or {}

    def begin(self, attempt: str, keys: list[str]) -> None:
        self._call("begin", attempt, keys)

    def end(self, attempt: str) -> None:
        # Not waited for: the replica's next `begin` or `crashes` runs after it (an actor runs one caller's
        # calls in order), and a replica that dies before it is sent costs its rows one retry alone.
        self.handle.end.remote(attempt)

    @staticmethod
    def replica_name() -> str:
        """The calling actor's id: Ray keeps it when it restarts the actor (`crashes.model_load_guard`)."""
        return ray.get_runtime_context().get_actor_id() or "driver"

    def stats(self) -> dict:
        return self._call("stats") or {}

    def _call(self, method: str, *args):
        try:
            return ray.get(getattr(self.handle, method).remote(*args), timeout=60)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            log.warning("the crash ledger did not answer (%s); going on without crash tracking", exc)
            return None
