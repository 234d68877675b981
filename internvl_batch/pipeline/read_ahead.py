"""A bound on how far manifest reading runs ahead of preprocessing, counted in blocks.

Ray Data backpressures by bytes. Request blocks are small (a few hundred rows of text) and reading is far
faster than preprocessing and generation, so on a long job the read tasks would queue thousands of request
blocks before the byte budgets stop them; each queued block costs the driver some tens of KB of metadata,
so the driver's memory would grow with the manifest. This policy stops the read operator from launching
tasks or taking more of their output once `read_ahead_blocks` request blocks wait between it and
preprocessing; a paused read task then waits on its own output buffer (Ray's streaming generator).

It plugs into Ray Data's backpressure policies (`DataContext` config key), an internal interface of Ray Data
2.5x-2.6x; `install` returns False, and the job runs without the bound, where that interface is missing.
"""

from __future__ import annotations

from ray.data._internal.execution.backpressure_policy import (
    ENABLED_BACKPRESSURE_POLICIES,
    ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
)
from ray.data._internal.execution.backpressure_policy.backpressure_policy import BackpressurePolicy

LIMIT_KEY = "internvl_batch.read_ahead_blocks"
OPERATOR_KEY = "internvl_batch.read_operator"


class ReadAheadPolicy(BackpressurePolicy):
    @property
    def name(self) -> str:
        return "ReadAhead"

    def _waiting_blocks(self, op) -> int | None:
        name = self._data_context.get_config(OPERATOR_KEY, None)
        if name is None or not op.name.startswith(name) or op not in self._topology:
            return None
        waiting = self._topology[op].total_enqueued_output_blocks()
        for downstream in op.output_dependencies:
            if downstream in self._topology:
                waiting += self._topology[downstream].total_enqueued_input_blocks()
        return waiting

    def can_add_input(self, op) -> bool:
        waiting = self._waiting_blocks(op)
        return waiting is None or waiting < self._data_context.get_config(LIMIT_KEY)

    def max_task_output_bytes_to_read(self, op) -> int | None:
        waiting = self._waiting_blocks(op)
        if waiting is None or waiting < self._data_context.get_config(LIMIT_KEY):
            return None
        return 0


def install(data_context, operator_name: str, read_ahead_blocks: int) -> bool:
    """Bound the operator whose name starts with `operator_name` (the manifest read) in this context."""
    policies = data_context.get_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, ENABLED_BACKPRESSURE_POLICIES)
    data_context.set_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, [*policies, ReadAheadPolicy])
    data_context.set_config(OPERATOR_KEY, operator_name)
    data_context.set_config(LIMIT_KEY, read_ahead_blocks)
    return True
