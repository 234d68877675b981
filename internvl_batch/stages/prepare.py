"""CPU stage: fetch media, decode, tile, build and tokenise the prompt.

Columns in: `id`, `media_kind`, `media`, `question`, `task`, `error` (a row that already has an error passes
through untouched).
Columns out (added or replaced): `question` and `task` (defaults filled in), `input_ids` (list<int32>),
`pixels` (large_binary: the uint8 tiles of all the row's images, `[n, 448, 448, 3]` row-major, in prompt
order), `num_tiles` (list<int32>, per image), `num_input_tokens` (int32), `error`.
Row problems become `error` = "<stage>: <ExceptionType>: <message>" with stage fetch, decode or prompt.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from internvl_batch.config import JobConfig
from internvl_batch.errors import RowError, format_row_error
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.model.checkpoint import read_checkpoint_info, resolve_model_path
from internvl_batch.model.loader import load_tokenizer
from internvl_batch.prompts import PromptBuilder
from internvl_batch.stages.columns import column, set_column
from internvl_batch.storage import MediaFetcher

INPUT_COLUMNS = ("id", "media_kind", "media", "question", "task", "error")


class _RowFailure(Exception):
    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(format_row_error(stage, exc))


class PrepareStage:
    """Callable per batch (pyarrow Table in, Table out); build once per actor."""

    def __init__(self, config: JobConfig) -> None:
        info = read_checkpoint_info(resolve_model_path(config.model.path, weights=False))
        self.prompts = PromptBuilder(load_tokenizer(info), info.system_message, info.tokens_per_tile)
        self.preprocessor = ImagePreprocessor.from_options(config.preprocess, info)
        self.fetcher = MediaFetcher(config.storage, config.fetch)
        self.default_question = config.task.question
        self.default_task = config.task.name

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = column(batch, "error")
        media = column(batch, "media", [])
        kinds = column(batch, "media_kind", "image")
        questions = [q if q is not None else self.default_question for q in column(batch, "question")]
        tasks = [t if t is not None else self.default_task for t in column(batch, "task")]

        # One concurrent fetch for every URI of the batch: object-store latency overlaps across rows.
        wanted = [uri for err, uris in zip(errors, media) if err is None for uri in uris]
        fetched = dict(zip(wanted, self.fetcher.fetch_many(wanted)))

        input_ids, pixels, num_tiles, num_tokens = [], [], [], []
        for i in range(batch.num_rows):
            ids, tiles, counts = None, None, None
            if errors[i] is None:
                try:
                    ids, tiles, counts = self._prepare_row(media[i], kinds[i], questions[i], fetched)
                except _RowFailure as failure:
                    errors[i] = str(failure)
            input_ids.append(ids)
            pixels.append(tiles)
            num_tiles.append(counts)
            num_tokens.append(None if ids is None else len(ids))

        out = set_column(batch, "question", questions, pa.string())
        out = set_column(out, "task", tasks, pa.string())
        out = set_column(out, "input_ids", input_ids, pa.list_(pa.int32()))
        out = set_column(out, "pixels", pixels, pa.large_binary())
        out = set_column(out, "num_tiles", num_tiles, pa.list_(pa.int32()))
        out = set_column(out, "num_input_tokens", num_tokens, pa.int32())
        return set_column(out, "error", errors, pa.string())

    def _prepare_row(self, uris: list[str], kind: str, question: str, fetched: dict) -> tuple[list[int], bytes, list[int]]:
        # The reference's multi-image rule: the tile budget is shared, max(1, max_num // n_images) each.
        budget = max(1, self.preprocessor.max_num // len(uris)) if len(uris) > 1 else None
        tiles, counts = [], []
        for uri in uris:
            data = fetched[uri]
            if isinstance(data, Exception):
                raise _RowFailure("fetch", data)
            try:
                image = self.preprocessor(data, max_num=budget)
            except Exception as exc:  # noqa: BLE001 - decoders raise many types; any of them is this row's fault
                raise _RowFailure("decode", exc) from None
            tiles.append(image.tiles)
            counts.append(image.num_tiles)
        try:
            prompt = self.prompts.build(question, counts, kind=kind)
        except RowError as exc:
            raise _RowFailure("prompt", exc) from None
        pixel_bytes = (np.concatenate(tiles) if len(tiles) > 1 else tiles[0]).tobytes()
        return prompt.input_ids.astype(np.int32).tolist(), pixel_bytes, counts
