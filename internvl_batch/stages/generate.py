"""GPU stage: one model replica per actor; answers prepared rows and reads structured answers.

Columns in: `input_ids`, `pixels`, `max_new_tokens`, `task`, `media_sizes`, `expression`, `error` (+
everything else, carried through).
Columns out: the output schema (`stages/output.py`): `response`, `num_output_tokens`, `finish_reason`,
`boxes` (ground), `parsed` (json), `parse_error`, `status`, `model`, `run_id`; the internal columns
(`input_ids`, `pixels`, ...) dropped. Rows that arrive with an error are not sent to the model. A micro-batch
that runs out of memory is split and retried by the predictor; a row that does not fit alone, or a batch
whose generation fails otherwise, gets `error` = "generate: ..." instead of being lost.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from internvl_batch.config import PipelineConfig
from internvl_batch.errors import format_row_error
from internvl_batch.generation.predictor import GenerationRequest, Predictor
from internvl_batch.grounding import parse_boxes
from internvl_batch.imaging.tiling import TILE_SIZE
from internvl_batch.stages.columns import column, set_column
from internvl_batch.stages.output import OUTPUT_SCHEMA, to_output_table
from internvl_batch.tasks import PRESETS

log = logging.getLogger(__name__)


class GenerateStage:
    def __init__(self, config: PipelineConfig, model_name: str, run_id: str | None = None, passthrough: list[str] = ()) -> None:
        self.predictor = Predictor(config.model, config.generation, config.batching, model_name=model_name, storage=config.storage)
        self.model_name = model_name
        self.run_id = run_id
        self.passthrough = list(passthrough)  # input columns copied to the output unchanged
        self.json_parser = None
        if config.task.json_schema:
            from internvl_batch.structured import JsonAnswerParser

            self.json_parser = JsonAnswerParser(config.task.json_schema)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        errors = column(batch, "error")
        todo = [i for i, e in enumerate(errors) if e is None]
        responses, out_tokens, finish = [None] * n, [None] * n, [None] * n
        if todo:
            ids, pixels, limits = column(batch, "input_ids"), column(batch, "pixels"), column(batch, "max_new_tokens")
            requests = [GenerationRequest(np.asarray(ids[i], np.int64), _tiles(pixels[i]), limits[i]) for i in todo]
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
        return to_output_table(out, self.model_name, self.passthrough, self.run_id, parsed_type)

    def _read_answers(self, batch: pa.Table, responses: list):
        """Boxes for `ground` rows, validated JSON for `json` rows; what cannot be read is a parse_error."""
        n = batch.num_rows
        tasks, sizes, expressions = column(batch, "task"), column(batch, "media_sizes"), column(batch, "expression")
        boxes, parsed, errors = [None] * n, [None] * n, [None] * n
        for i, response in enumerate(responses):
            if response is None:
                continue
            output = PRESETS[tasks[i]].output if tasks[i] in PRESETS else "text"
            if output == "boxes" and sizes[i]:
                result = parse_boxes(response, sizes[i][0]["width"], sizes[i][0]["height"], expressions[i])
                boxes[i] = result.boxes
                errors[i] = ("ground: " + "; ".join(result.warnings)) if result.warnings else None
            elif output == "json" and self.json_parser is not None:
                parsed[i], errors[i] = self.json_parser(response)
        return boxes, parsed, errors


def _tiles(pixel_bytes: bytes | None) -> np.ndarray | None:
    if not pixel_bytes:
        return None
    return np.frombuffer(pixel_bytes, dtype=np.uint8).reshape(-1, TILE_SIZE, TILE_SIZE, 3)
