"""GPU stage: one model replica per actor; answers prepared rows and reads structured answers.

Columns in: `input_ids`, `pixels`, `max_new_tokens`, `task`, `media_sizes`, `expression`, `error` (+
everything else, carried through).
Columns out: the output schema (`stages/output.py`): `response`, `num_output_tokens`, `finish_reason`,
`boxes` (ground), `parsed` (json), `parse_error`, `status`, `model`, `run_id`; the internal columns
(`input_ids`, `pixels`, ...) dropped. Rows that arrive with an error are not sent to the model.
Failures (`generation/faults.py`): a micro-batch that runs out of memory is split and retried by the
predictor, and a row that does not fit alone gets `error` = "generate: OutOfMemoryError: ..."; an accelerator
fault ends the replica's process (Ray restarts it and retries the batch); any other exception is raised, and
fails the job, rather than marking every row of the batch as failed. With a crash ledger (`generation/crashes.py`)
the rows of each micro-batch are recorded as in flight: rows that were in flight when a replica died are
generated one at a time, and a row on which `max_crashes_per_row` replicas died gets
`error` = "generate: ReplicaCrashed: ...".
"""

from __future__ import annotations

import functools
import uuid
from contextlib import contextmanager

import numpy as np
import pyarrow as pa

from internvl_batch.config import BatchingConfig, GenerationConfig, ModelConfig, PipelineConfig, StorageConfig
from internvl_batch.generation.crashes import model_load_guard, row_keys, triage
from internvl_batch.generation.faults import describe_deterministic, exit_replica, is_replica_fault
from internvl_batch.generation.predictor import GenerationRequest, GenerationResult, Predictor
from internvl_batch.imaging.tiling import TILE_SIZE
from internvl_batch.stages.columns import column, require_columns, set_column
from internvl_batch.stages.output import OUTPUT_SCHEMA, to_output_table
from internvl_batch.structured import JsonAnswerParser
from internvl_batch.tasks import TASKS


class GenerateStage:
    """Callable per batch of prepared rows; one model replica, built once per actor."""

    # The prepared rows' columns read (`stages/prepare.py`); the output has the output schema's columns only.
    INPUT_COLUMNS = ("id", "task", "input_ids", "pixels", "max_new_tokens", "media_sizes", "expression", "error")
    OUTPUT_COLUMNS = tuple(OUTPUT_SCHEMA.names)  # then `parsed` (json tasks) and the pass-through columns
    DROPPED_COLUMNS = None  # None: no input column is carried as such

    def __init__(
        self,
        *,
        model: ModelConfig,
        generation: GenerationConfig,
        batching: BatchingConfig,
        storage: StorageConfig,
        json_schema: dict | None,
        model_name: str,
        run_id: str | None = None,
        passthrough: dict[str, str] | list[str] = (),
        reserved_gpus: float | None = None,
        max_crashes_per_row: int = 2,
        max_replica_load_deaths: int = 3,
        crash_ledger=None,
        fingerprints: dict[str, str] | None = None,
    ) -> None:
        """`json_schema`: `task.json_schema` (answers of `json` rows are validated against it);
        `reserved_gpus`: the GPUs Ray reserved for this replica; with none it runs on the CPU;
        `crash_ledger`: a `CrashLedger` (or its Ray actor's client) shared by the run's replicas; None: rows
        that kill replicas, and replicas that die while loading, are not tracked."""
        with model_load_guard(crash_ledger, max_replica_load_deaths):
            self.predictor = Predictor(
                model, generation, batching, model_name=model_name, storage=storage, reserved_gpus=reserved_gpus
            )
        self.model_name = model_name
        self.run_id = run_id
        # Manifest columns copied to the output unchanged: manifest name -> output name (a list: the same).
        self.passthrough = dict(passthrough) if isinstance(passthrough, dict) else {n: n for n in passthrough}
        self.max_crashes_per_row = max_crashes_per_row
        self.crash_ledger = crash_ledger
        self.json_parser = JsonAnswerParser(json_schema) if json_schema else None
        self.fingerprints = fingerprints or {}  # task -> the run's config fingerprint (`fingerprint.py`)

    @staticmethod
    def sections(config: PipelineConfig) -> dict:
        """The parts of the job's config this stage uses (the constructor's other arguments are per run)."""
        names = ("model", "generation", "batching", "storage")
        return {name: getattr(config, name) for name in names} | {
            "json_schema": config.task.json_schema,
            "max_crashes_per_row": config.resources.max_crashes_per_row,
            "max_replica_load_deaths": config.resources.max_replica_load_deaths,
        }

    @classmethod
    def from_config(cls, config: PipelineConfig, model_name: str, **kwargs) -> GenerateStage:
        return cls(**cls.sections(config), model_name=model_name, **kwargs)

    def __call__(self, batch: pa.Table) -> pa.Table:
        require_columns(batch, "GenerateStage", self.INPUT_COLUMNS)
        n = batch.num_rows
        errors = column(batch, "error")
        todo = [i for i, e in enumerate(errors) if e is None]
        responses, out_tokens, finish = [None] * n, [None] * n, [None] * n
        if todo:
            ids, pixels, limits = column(batch, "input_ids"), column(batch, "pixels"), column(batch, "max_new_tokens")
            keys = _image_keys(column(batch, "id"), pixels, todo)
            requests = {
                i: GenerationRequest(np.asarray(ids[i], np.int64), _tiles(pixels[i]), limits[i], keys[i]) for i in todo
            }
            for i, result in self._generate(requests, batch).items():
                if result.error:
                    errors[i] = result.error
                    continue
                responses[i], out_tokens[i], finish[i] = result.response, result.num_output_tokens, result.finish_reason
        boxes, parsed, parse_errors = self._read_answers(batch, responses)
        out = set_column(batch, "response", responses, pa.string())
        out = set_column(out, "num_output_tokens", out_tokens, pa.int32())
        out = set_column(out, "finish_reason", finish, pa.string())
        out = set_column(out, "boxes", boxes, OUTPUT_SCHEMA.field("boxes").type)
        out = set_column(out, "parse_error", parse_errors, pa.string())
        parsed_type = None
        if self.json_parser is not None:
            parsed_type = self.json_parser.type
            out = set_column(out, "parsed", parsed, parsed_type)
        out = set_column(out, "error", errors, pa.string())
        return to_output_table(out, self.model_name, self.passthrough, self.run_id, parsed_type, self.fingerprints)

    def _generate(self, requests: dict, batch: pa.Table) -> dict:
        """Results by position: rows without crashes in micro-batches, rows with crashes one at a time, rows at
        the crash limit not at all (an error result)."""
        positions = list(requests)
        if self.crash_ledger is None:
            return dict(zip(positions, self._predict([requests[i] for i in positions])))
        row_ids, tasks = column(batch, "id"), column(batch, "task")
        keys = dict(zip(positions, row_keys([row_ids[i] for i in positions], [tasks[i] for i in positions])))
        crashes = self.crash_ledger.crashes(list(keys.values()))
        plan = triage(positions, list(keys.values()), crashes, self.max_crashes_per_row)
        results = {i: GenerationResult(None, [], 0, 0, None, error=text) for i, text in plan.given_up.items()}
        for group in filter(None, [plan.batched] + [[i] for i in plan.alone]):
            watch = functools.partial(self._in_flight, [keys[i] for i in group])
            results.update(zip(group, self._predict([requests[i] for i in group], watch)))
        return results

    def _predict(self, requests: list, watch=None) -> list:
        try:
            return self.predictor.generate(requests, watch)
        except Exception as exc:
            if is_replica_fault(exc):
                exit_replica(exc)  # never returns
            if description := describe_deterministic(exc):
                exc.add_note(description)  # why the job stops instead of retrying on another replica
            raise

    @contextmanager
    def _in_flight(self, keys: list[str], rows: list[int]):
        """Record `rows` (positions in `keys`) as in flight while they are generated (`crashes.py`). If this
        process dies meanwhile, no `finally` runs: the record stays, and the retried batch finds it."""
        attempt = uuid.uuid4().hex
        self.crash_ledger.begin(attempt, [keys[r] for r in rows])
        try:
            yield
        except Exception as exc:
            if is_replica_fault(exc):
                exit_replica(exc)  # never returns, so the record stays, as for any other death
            raise
        finally:
            self.crash_ledger.end(attempt)

    def _read_answers(self, batch: pa.Table, responses: list):
        """What each row's task reads from its answer (`Task.read` in `tasks.py`): boxes for `ground` rows,
        validated JSON for `json` rows; what cannot be read is a parse_error. Rows without an answer read
        nothing."""
        n = batch.num_rows
        tasks, sizes, expressions = column(batch, "task"), column(batch, "media_sizes"), column(batch, "expression")
        boxes, parsed, errors = [None] * n, [None] * n, [None] * n
        for i, response in enumerate(responses):
            if response is not None and tasks[i] in TASKS:
                size = sizes[i][0] if sizes[i] else None
                boxes[i], parsed[i], errors[i] = TASKS[tasks[i]].read(response, size, expressions[i], self.json_parser)
        return boxes, parsed, errors


def _tiles(pixel_bytes: bytes | None) -> np.ndarray | None:
    if not pixel_bytes:
        return None
    return np.frombuffer(pixel_bytes, dtype=np.uint8).reshape(-1, TILE_SIZE, TILE_SIZE, 3)


def _image_keys(row_ids: list, pixels: list, todo: list[int]) -> dict[int, int | None]:
    """Rows whose images the vision tower may compute once (`generation/features.py`): the task rows of one
    input row (same id) whose pixels are byte-for-byte the same, keyed by the first such row's position."""
    first: dict = {}
    keys: dict[int, int | None] = {}
    for i in todo:
        if not pixels[i]:
            keys[i] = None
            continue
        j = first.setdefault(row_ids[i], i)
        keys[i] = j if j == i or pixels[j] == pixels[i] else None
    return keys
