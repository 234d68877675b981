"""What the scan and the read stage share: a unit's rows, checked, with their tasks and which are done.

Both passes over the manifests (the scan that counts and finds duplicate ids, and the read stage that feeds
the pipeline) must agree row for row on ids, positions, tasks and resume decisions; they get all of these from
`unit_chunks`, so they cannot drift apart.

A row's position is `(unit index << 32) | row number within the unit`: it orders rows in manifest order and
names a row without its id (the duplicate filter drops rows by position).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from internvl_batch.config import StorageConfig
from internvl_batch.done_keys import ResultKeys, text_hashes
from internvl_batch.errors import TASK, TaskError, format_row_error
from internvl_batch.keys import key_hashes
from internvl_batch.manifest.read import UnitRows
from internvl_batch.manifest.rows import ParsedRow, parse_row
from internvl_batch.manifest.units import ReadUnit
from internvl_batch.tasks import TaskPrompter

CHUNK_ROWS = 4096


class TaskAssigner:
    """A row's tasks: its `task` column, the job's task, or `task.tasks`. A row naming an unknown task gets an
    error (and its one output row under that name). Decisions are cached: they depend on two fields only."""

    def __init__(self, prompter: TaskPrompter) -> None:
        self.prompter = prompter
        self._known: dict[tuple, tuple[list[str], str | None]] = {}

    def __call__(self, row: ParsedRow) -> tuple[ParsedRow, list[str]]:
        """(the row, with the task error when it has no earlier one; its tasks)."""
        key = (row.task, bool(row.question))
        if key not in self._known:
            try:
                self._known[key] = (self.prompter.tasks_for(row.task, row.question), None)
            except TaskError as exc:
                self._known[key] = ([row.task], format_row_error(TASK, exc))
        tasks, error = self._known[key]
        if error and not row.error:
            row = row._replace(error=error)
        return row, tasks


@dataclass
class Chunk:
    """Up to CHUNK_ROWS rows of one unit with their keys. Keys are flattened in row order: row i owns
    keys[starts[i]:starts[i + 1]]."""

    positions: list[int]
    numbers: list[int]  # line (or row) numbers in the manifest file
    raws: list  # the raw rows (dict or ManifestError), for pass-through columns
    rows: list[ParsedRow]
    tasks: list[list[str]]
    starts: np.ndarray  # int64 [rows + 1]
    hashes: np.ndarray  # uint64 [keys, 2]
    done: np.ndarray  # bool [keys]: has a result this run keeps (`done_keys.ResultKeys.judge`)
    found: np.ndarray  # bool [keys]: has a result
    changed: np.ndarray  # bool [keys]: has one made from another version of its media
    stale: np.ndarray  # bool [keys]: has one made with a config fingerprint the run does not accept
    stale_configs: frozenset[int] = frozenset()  # those fingerprints' hashes
    found_index: np.ndarray | None = None  # int64 per key: its result's index in the `ResultKeys`, -1: none


def unit_chunks(
    unit: ReadUnit,
    storage: StorageConfig,
    assigner: TaskAssigner,
    done_keys: ResultKeys | None,
    source: UnitRows | None = None,
) -> Iterator[Chunk]:
    """The unit's rows in chunks. Pass `source` to read its counters (blank lines, rows with an id) after."""
    source = source or UnitRows(unit, storage)
    base = unit.index << 32
    label = unit.file.label
    batch: list[tuple] = []
    for offset, (number, raw) in enumerate(source):
        batch.append((base | offset, number, raw, parse_row(raw, f"{label}:{number}")))
        if len(batch) == CHUNK_ROWS:
            yield _chunk(batch, assigner, done_keys)
            batch = []
    if batch:
        yield _chunk(batch, assigner, done_keys)


def _chunk(batch: list[tuple], assigner: TaskAssigner, done_keys: ResultKeys | None) -> Chunk:
    positions, numbers, raws, parsed = (list(column) for column in zip(*batch))
    rows, tasks = (list(column) for column in zip(*map(assigner, parsed)))
    counts = np.fromiter((len(t) for t in tasks), np.int64, len(tasks))
    starts = np.concatenate([[0], np.cumsum(counts)])
    key_tasks = [t for ts in tasks for t in ts]
    hashes = key_hashes([row.id for row, ts in zip(rows, tasks) for _ in ts], key_tasks)
    if done_keys is None:
        none = np.zeros(len(hashes), bool)
        return Chunk(positions, numbers, raws, rows, tasks, starts, hashes, none, none, none, none)
    versions = np.repeat(text_hashes([row.version for row in rows]), counts)
    verdict = done_keys.judge(hashes, versions, key_tasks)
    return Chunk(
        positions,
        numbers,
        raws,
        rows,
        tasks,
        starts,
        hashes,
        verdict.done,
        verdict.found,
        verdict.changed,
        verdict.stale,
        verdict.stale_configs,
        verdict.index,
    )
