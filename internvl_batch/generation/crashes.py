"""Rows that kill model replicas: what each replica has in flight is recorded outside it, so that the batch Ray
retries after a replica died is generated row by row, and a row that keeps killing replicas becomes an error row.

A replica's process that dies (a segfault in a kernel, an accelerator fault: `faults.exit_replica`, the
kernel's out-of-memory killer) cannot say which rows killed it. Ray restarts the actor and retries its batch,
so without more a row that kills every replica that tries it is retried for ever. Instead:

- before each micro-batch a replica records its rows as in flight (`CrashLedger.begin`) and clears them when
  the micro-batch is done (`end`). The ledger is one small Ray actor per run (`pipeline/crash_ledger.py`);
- a row of a new batch that is still recorded as in flight was in flight when a replica died (`crashes`);
- `triage` sends rows without crashes to the usual micro-batching, generates rows with crashes one at a time
  (so a death names one row), and gives up on a row with `resources.max_crashes_per_row` crashes: it becomes
  `generate: ReplicaCrashed: ...`, and the rest of its micro-batch is answered as usual.

The ledger holds the rows in flight (replicas x micro-batch rows) and the rows of micro-batches that died,
until they are done: it never grows with the input. A row's key is its `id` and `task` (`row_keys`).

Loading the model is watched the same way (`model_load_guard`): a replica records its load as in flight under
its own name, so a replica that Ray restarts after dying while loading (the node's memory is too small for the
model) finds how many times that happened, and refuses to load again at `resources.max_replica_load_deaths`.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

from internvl_batch.errors import GENERATE, ModelLoadError, ReplicaCrashed, format_row_error


class CrashLedger:
    """Rows in flight per attempt (one micro-batch on one replica). Plain state: the pipeline runs it as a Ray
    actor, tests call it directly."""

    def __init__(self) -> None:
        self._open: dict[str, list[str]] = {}  # attempt -> its row keys, until it ends or is found dead
        self._attempts_of: dict[str, list[str]] = {}  # row key -> the attempts that had it in flight, unfinished
        self._dead: set[str] = set()  # attempts found to have died (their rows came back unfinished)

    def crashes(self, keys: list[str]) -> dict[str, int]:
        """For each key that earlier attempts had in flight and never finished: how many such attempts (each
        one a replica that died with the row in flight). Keys without crashes are left out."""
        found = {}
        for key in keys:
            attempts = self._attempts_of.get(key)
            if attempts:
                found[key] = len(attempts)
                for attempt in attempts:
                    self._dead.add(attempt)
                    self._open.pop(attempt, None)  # a dead attempt never ends: keep only its count
        return found

    def begin(self, attempt: str, keys: list[str]) -> None:
        """`keys` are about to be generated together as `attempt`."""
        self._open[attempt] = list(keys)
        for key in keys:
            self._attempts_of.setdefault(key, []).append(attempt)

    def end(self, attempt: str) -> None:
        """The attempt finished (its process did not die): its rows' crash records are dropped."""
        for key in self._open.pop(attempt, ()):
            self._attempts_of.pop(key, None)

    @staticmethod
    def replica_name() -> str:
        """The name that stays the same when the calling replica is restarted: here (one process, no Ray) its
        process id. The Ray actor's client names the actor instead."""
        return str(os.getpid())

    def stats(self) -> dict:
        """`replica_crashes`: replica deaths found so far (attempts whose rows came back unfinished)."""
        return {"replica_crashes": len(self._dead), "rows_in_flight_or_crashed": len(self._attempts_of)}


def row_keys(ids: list, tasks: list) -> list[str]:
    """The ledger's key of each row: its id and task (a PDF page's id names its page)."""
    return [f"{row_id}\t{task}" for row_id, task in zip(ids, tasks)]


@dataclass
class Triage:
    """Positions of a batch's rows by what their crashes call for."""

    batched: list[int] = field(default_factory=list)  # no crash: micro-batched as usual
    alone: list[int] = field(default_factory=list)  # crashed below the limit: generated one at a time
    given_up: dict[int, str] = field(default_factory=dict)  # at the limit: position -> the row's error text


def triage(positions: list[int], keys: list[str], crashes: dict[str, int], limit: int) -> Triage:
    """Sort `positions` (with their `keys`) by their crash counts; `limit` is `resources.max_crashes_per_row`."""
    out = Triage()
    for position, key in zip(positions, keys):
        count = crashes.get(key, 0)
        if count == 0:
            out.batched.append(position)
        elif count < limit:
            out.alone.append(position)
        else:
            out.given_up[position] = format_row_error(
                GENERATE,
                ReplicaCrashed(
                    f"a model replica's process died while generating this row, {count} times (the last time "
                    f"with no other row); not tried again (resources.max_crashes_per_row={limit})"
                ),
            )
    return out


@contextmanager
def model_load_guard(ledger, limit: int):
    """Around loading the model in a replica: raises `ModelLoadError` instead of loading when this replica's
    process already died `limit` times while loading (`resources.max_replica_load_deaths`). A load that
    returns is recorded as done; one that dies leaves its record for the restarted replica. No ledger: no
    guard."""
    if ledger is None:
        yield
        return
    key = f"load\t{ledger.replica_name()}"
    deaths = ledger.crashes([key]).get(key, 0)
    if deaths >= limit:
        raise ModelLoadError(
            f"a model replica's process died {deaths} times while loading the model (is the node's memory "
            f"large enough for it? see the replica's worker log); not started again "
            f"(resources.max_replica_load_deaths={limit})"
        )
    attempt = uuid.uuid4().hex
    ledger.begin(attempt, [key])
    yield
    ledger.end(attempt)
