"""GPU stage: one model replica per actor; answers prepared rows.

Columns in: `input_ids`, `pixels`, `num_tiles`, `error` (+ everything else, carried through).
Columns out: the output schema (`stages/output.py`): `response`, `num_output_tokens`, `finish_reason`,
`status`, `model`, `run_id` added; `input_ids` and `pixels` dropped. Rows that arrive with an error are not
sent to the model. A micro-batch that runs out of memory is split and retried by the predictor; a row that
does not fit alone, or a batch whose generation fails otherwise, gets `error` = "generate: ..." instead of
being lost.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from internvl_batch.config import JobConfig
from internvl_batch.errors import format_row_error
from internvl_batch.generation.predictor import GenerationRequest, Predictor
from internvl_batch.imaging.tiling import TILE_SIZE
from internvl_batch.stages.columns import column, set_column
from internvl_batch.stages.output import to_output_table

log = logging.getLogger(__name__)


class GenerateStage:
    def __init__(self, config: JobConfig, model_name: str, run_id: str | None = None) -> None:
        self.predictor = Predictor(config.model, config.generation, config.batching, model_name=model_name)
        self.model_name = model_name
        self.run_id = run_id
        self.passthrough = list(config.input.passthrough_columns)

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = column(batch, "error")
        todo = [i for i, e in enumerate(errors) if e is None]
        responses, out_tokens, finish = [None] * batch.num_rows, [None] * batch.num_rows, [None] * batch.num_rows
        if todo:
            ids, pixels = column(batch, "input_ids"), column(batch, "pixels")
            requests = [GenerationRequest(np.asarray(ids[i], np.int64), _tiles(pixels[i])) for i in todo]
            try:
                results = self.predictor.generate(requests)
            except Exception as exc:  # noqa: BLE001 - the rows must come out, with the reason
                log.exception("generation failed for a batch of %d rows", len(todo))
                for i in todo:
                    errors[i] = format_row_error("generate", exc)
            else:
                for i, result in zip(todo, results):
                    if result.error:
                        errors[i] = result.error
                        continue
                    responses[i] = result.response
                    out_tokens[i] = result.num_output_tokens
                    finish[i] = result.finish_reason
        out = set_column(batch, "response", responses, pa.string())
        out = set_column(out, "num_output_tokens", out_tokens, pa.int32())
        out = set_column(out, "finish_reason", finish, pa.string())
        out = set_column(out, "error", errors, pa.string())
        return to_output_table(out, self.model_name, self.passthrough, self.run_id)


def _tiles(pixel_bytes: bytes | None) -> np.ndarray | None:
    if not pixel_bytes:
        return None
    return np.frombuffer(pixel_bytes, dtype=np.uint8).reshape(-1, TILE_SIZE, TILE_SIZE, 3)
