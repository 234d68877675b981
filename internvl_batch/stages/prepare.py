"""CPU stage: fetch media, decode and tile it once per row, then build and tokenise one prompt per task.

Columns in: `id`, `media_kind`, `media`, `question`, `task`, `tasks` (the tasks to run, decided on the
driver; resolved here when absent), `bound`, `num_segments`, `expression`, the task template's columns (`in.<name>`, or the row's own for
id/question/...: `passthrough.template_columns`), `error` (a row that already has an error passes through, once per task).
Columns out: one row per (input row, task), and for a PDF one row per (page, task) with `id` = `<id>#p<n>`,
`page` (1-based) and `num_pages` (a document that cannot be read at all keeps one row per task, with its own
id): the input's columns, with `task` and `question` (the prompt's question, defaults filled in) replaced,
plus `input_ids` (list<int32>), `pixels` (large_binary: uint8 tiles `[n, 448, 448, 3]` of all the row's
images or frames in prompt order, shared by its tasks), `num_tiles`, `media_sizes` (list<struct<width,
height>>: after EXIF orientation; a page's rendered size), `num_input_tokens`, `max_new_tokens` (the task's
limit), for video rows `num_frames`, `frame_indices`, `frame_timestamps`, and `error`.
Row problems become `error` = "<stage>: <ExceptionType>: <message>" with stage limits, fetch, decode, task
or prompt.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from internvl_batch.config import (
    FetchConfig,
    GenerationConfig,
    ModelConfig,
    PipelineConfig,
    PreprocessConfig,
    PromptConfig,
    StorageConfig,
    TaskConfig,
    VideoConfig,
)
from internvl_batch.errors import (
    LIMITS,
    PROMPT,
    TASK,
    LimitError,
    PromptError,
    RowError,
    RowFailure,
    TaskError,
    format_row_error,
)
from internvl_batch.model.bundle import ModelBundle
from internvl_batch.passthrough import template_columns
from internvl_batch.stages.columns import column, require_columns
from internvl_batch.stages.isolated_decoder import IsolatedDecoder
from internvl_batch.stages.media import DecodedMedia, MediaDecoder
from internvl_batch.stages.prepared import PREPARED_NAMES, prepared_table
from internvl_batch.stages.video_sources import VideoSources
from internvl_batch.storage import KindPolicy, MediaFetcher
from internvl_batch.tasks import TaskPrompter, template_fields

# Prepared rows are handed on in tables of about this size: small enough to bound the tiles held at once,
# and each one contiguous, because Ray serialises every chunk of every column separately (for rows without
# pixels, a table of many 8-row chunks cost more to serialise than to prepare).
YIELD_BYTES = 128 * 2**20  # Ray Data's own target block size


def _release_tiles(decoded: DecodedMedia | None) -> bytes | None:
    """The tiles as bytes (one copy, shared by the row's tasks, or the bytes they arrived in from the decoder
    process); the array is dropped so that a document's pages are not held twice."""
    if decoded is None:
        return None
    pixels = decoded.pixels if decoded.pixels is not None else decoded.tiles.tobytes()
    decoded.tiles = decoded.pixels = None
    return pixels


def _one_chunk(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()


class PrepareStage:
    """Callable per block of request rows: prepares `resources.cpu_batch_size` rows at a time and yields
    tables of about YIELD_BYTES, so that the tiles held at once stay bounded while Ray Data's per-call
    overhead is paid once per block (rows that fail fast, like missing media, then cost little). Build once
    per actor."""

    # The request rows' columns read (`stages/read.py` REQUEST_SCHEMA), plus the task template's.
    INPUT_COLUMNS = (
        "id",
        "media_kind",
        "media",
        "media_data",
        "question",
        "task",
        "tasks",
        "expression",
        "bound",
        "num_segments",
        "error",
    )
    # Columns written (added or replaced: `stages/prepared.py`); the other input columns are carried, but for these:
    OUTPUT_COLUMNS = PREPARED_NAMES
    DROPPED_COLUMNS = ("media_data",)  # embedded images end here, as tiles

    def __init__(
        self,
        *,
        model: ModelConfig,
        storage: StorageConfig,
        fetch: FetchConfig,
        preprocess: PreprocessConfig,
        video: VideoConfig,
        task: TaskConfig,
        generation: GenerationConfig,
        prompt: PromptConfig,
        cpu_batch_size: int,
    ) -> None:
        bundle = ModelBundle.load(model, storage)
        info = bundle.info
        self.prompts = bundle.prompts
        self.escape_special_tokens = prompt.escape_special_tokens
        if preprocess.isolate_decoding:
            self.decoder = IsolatedDecoder(preprocess, video, info)
        else:
            self.decoder = MediaDecoder(preprocess, video, info)
        video_policy = KindPolicy(video.max_bytes, "video.max_bytes", video.in_memory_max_bytes)
        self.fetcher = MediaFetcher(storage, fetch, {"video": video_policy}, video.temp_dir)
        self.sources = VideoSources(self.fetcher, storage, fetch, video)  # MP4s on object stores: ranged reads
        self.tasks = TaskPrompter(task, generation.max_new_tokens)
        # Row fields the prompts read -> their columns (a template's own fields travel as `in.<name>`).
        self.row_columns = {"question": "question", "expression": "expression"} | template_columns(
            template_fields(task.template)
        )
        self.input_columns = list(dict.fromkeys([*self.INPUT_COLUMNS, *self.row_columns.values()]))
        self.max_images = preprocess.max_images_per_row
        self.chunk_rows = cpu_batch_size
        limit = generation.max_input_tokens
        self.max_input_tokens = limit or max(1, info.max_position_embeddings - generation.max_new_tokens)
        self.max_input_tokens_name = (
            "generation.max_input_tokens"
            if limit
            else (f"the model's context ({info.max_position_embeddings}) minus generation.max_new_tokens")
        )

    @staticmethod
    def sections(config: PipelineConfig) -> dict:
        """The constructor's arguments: the parts of the job's config this stage uses, and nothing else."""
        names = ("model", "storage", "fetch", "preprocess", "video", "task", "generation", "prompt")
        return {name: getattr(config, name) for name in names} | {"cpu_batch_size": config.resources.cpu_batch_size}

    @classmethod
    def from_config(cls, config: PipelineConfig) -> PrepareStage:
        return cls(**cls.sections(config))

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        pending, size = [], 0
        for start in range(0, batch.num_rows, self.chunk_rows):
            pending.append(self.prepare(batch.slice(start, self.chunk_rows)))
            size += pending[-1].nbytes
            if size >= YIELD_BYTES:
                yield _one_chunk(pending)
                pending, size = [], 0
        if pending:
            yield _one_chunk(pending)

    def prepare(self, batch: pa.Table) -> pa.Table:
        """One chunk of request rows -> its prepared rows."""
        require_columns(batch, "PrepareStage", self.input_columns)
        errors = column(batch, "error")
        media, kinds = column(batch, "media"), column(batch, "media_kind")
        bounds, segments, row_tasks = column(batch, "bound"), column(batch, "num_segments"), column(batch, "task")
        assigned = column(batch, "tasks")  # decided on the driver (resume skips the (id, task) pairs done)
        fields = {name: column(batch, source) for name, source in self.row_columns.items()}
        for i, uris in enumerate(media):
            if errors[i] is None and len(uris) > self.max_images:
                limit = LimitError(f"row has {len(uris)} images, over preprocess.max_images_per_row={self.max_images}")
                errors[i] = format_row_error(LIMITS, limit)
        # Images held in the manifest need no fetch (they are looked up per row: their names need not be unique
        # across rows, e.g. API rows without ids); one concurrent fetch for every URI of the batch otherwise
        # (object-store latency overlaps across rows).
        embedded = [
            None if err is not None or data is None else {u: d for u, d in zip(uris, data) if d is not None}
            for err, uris, data in zip(errors, media, column(batch, "media_data"))
        ]
        wanted = list(
            dict.fromkeys(
                (uri, "video" if kind == "video" else "image")
                for err, uris, kind, own in zip(errors, media, kinds, embedded)
                if err is None
                for uri in uris
                if own is None or uri not in own
            )
        )
        fetched = {uri: data for (uri, _), data in zip(wanted, self.sources.fetch_many(wanted))}

        out: list[dict] = []  # one entry per output row
        try:
            for i in range(batch.num_rows):
                row = {name: values[i] for name, values in fields.items()}
                try:
                    tasks = assigned[i] or self.tasks.tasks_for(row_tasks[i], row["question"])
                except TaskError as exc:
                    tasks, errors[i] = [row_tasks[i]], errors[i] or format_row_error(TASK, exc)
                decoded = None
                sources = fetched if embedded[i] is None else ChainMap(embedded[i], fetched)
                if errors[i] is None and self.decoder.is_document(media[i], kinds[i], sources):
                    try:
                        num_pages, pages = self.decoder.document(media[i][0], sources)
                    except RowFailure as failure:
                        errors[i] = str(failure)  # the whole document failed: one row per task, as for an image
                    else:  # one row per (page, task), id `<id>#p<n>`
                        for page in pages:
                            pixels = _release_tiles(page.media)
                            for task in tasks:
                                out.append(
                                    self._task_row(
                                        i, task, row, page.media, pixels, page.error, (page.number, num_pages)
                                    )
                                )
                        continue
                if errors[i] is None:
                    try:
                        decoded = self.decoder.decode(media[i], kinds[i], bounds[i], segments[i], sources)
                    except RowFailure as failure:
                        errors[i] = str(failure)
                pixels = _release_tiles(decoded)
                for task in tasks:
                    out.append(self._task_row(i, task, row, decoded, pixels, errors[i]))
        finally:
            self.fetcher.release(fetched.values())  # temporary video files never outlive the batch
        return prepared_table(batch, out, self.DROPPED_COLUMNS)

    def _task_row(
        self,
        source: int,
        task: str,
        row: dict,
        decoded: DecodedMedia | None,
        pixels,
        error,
        page: tuple[int, int] | None = None,
    ) -> dict:
        """One output row's entry; `page` = (page number, pages in the document) for a document's page rows."""
        entry = {
            "source": source,
            "task": task,
            "question": row["question"],
            "decoded": None,
            "pixels": None,
            "input_ids": None,
            "max_new_tokens": None,
            "error": error,
            "page": page,
        }
        if error is not None:
            return entry
        try:
            question = self.tasks.question(task, row)
        except TaskError as exc:
            entry["error"] = format_row_error(TASK, exc)
            return entry
        try:
            prompt = self.prompts.build(question, decoded.num_tiles, decoded.kind, self.escape_special_tokens)
            if prompt.num_tokens > self.max_input_tokens:
                raise PromptError(
                    f"prompt of {prompt.num_tokens} tokens ({sum(decoded.num_tiles)} tiles) exceeds "
                    f"{self.max_input_tokens_name}={self.max_input_tokens}"
                )
        except RowError as exc:
            entry["error"] = format_row_error(PROMPT, exc)
            return entry
        entry.update(
            question=question,
            decoded=decoded,
            pixels=pixels,
            input_ids=prompt.input_ids.astype(np.int32).tolist(),
            max_new_tokens=self.tasks.max_new_tokens(task),
        )
        return entry
