"""CPU stage: fetch media, decode, tile (images) or sample frames (videos), build and tokenise the prompt.

Columns in: `id`, `media_kind`, `media`, `question`, `task`, `bound`, `num_segments`, `error` (a row that
already has an error passes through untouched).
Columns out (added or replaced): `question` and `task` (defaults filled in), `input_ids` (list<int32>),
`pixels` (large_binary: the uint8 tiles of all the row's images or frames, `[n, 448, 448, 3]` row-major, in
prompt order), `num_tiles` (list<int32>, per image or frame), `num_input_tokens` (int32), for video rows
`num_frames`, `frame_indices`, `frame_timestamps`, and `error`.
Row problems become `error` = "<stage>: <ExceptionType>: <message>" with stage limits, fetch, decode or prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from internvl_batch.config import JobConfig
from internvl_batch.errors import LimitError, PromptError, RowError, format_row_error
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.imaging.video import SampledVideo, VideoSampler
from internvl_batch.model.checkpoint import read_checkpoint_info, resolve_model_path
from internvl_batch.model.loader import load_tokenizer
from internvl_batch.prompts import PromptBuilder
from internvl_batch.stages.columns import column, set_column
from internvl_batch.storage import KindPolicy, LocalFile, MediaFetcher


class _RowFailure(Exception):
    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(format_row_error(stage, exc))


@dataclass
class PreparedRow:
    input_ids: list[int]
    pixels: bytes
    num_tiles: list[int]
    video: SampledVideo | None = None


class PrepareStage:
    """Callable per batch (pyarrow Table in, Table out); build once per actor."""

    def __init__(self, config: JobConfig) -> None:
        info = read_checkpoint_info(resolve_model_path(config.model.path, weights=False))
        self.prompts = PromptBuilder(load_tokenizer(info), info.system_message, info.tokens_per_tile)
        self.preprocessor = ImagePreprocessor.from_options(config.preprocess, info)
        self.video = VideoSampler(config.video.max_duration_s, config.video.max_segments)
        video_policy = KindPolicy(config.video.max_bytes, "video.max_bytes", config.video.in_memory_max_bytes)
        self.fetcher = MediaFetcher(config.storage, config.fetch, {"video": video_policy}, config.video.temp_dir)
        self.default_segments = config.video.num_segments
        self.max_images = config.preprocess.max_images_per_row
        self.multi_image_max_num = config.preprocess.multi_image_max_num
        self.default_question = config.task.question
        self.default_task = config.task.name
        limit = config.generation.max_input_tokens
        self.max_input_tokens = limit or max(1, info.max_position_embeddings - config.generation.max_new_tokens)
        self.max_input_tokens_name = "generation.max_input_tokens" if limit else (
            f"the model's context ({info.max_position_embeddings}) minus generation.max_new_tokens"
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = column(batch, "error")
        media, kinds = column(batch, "media", []), column(batch, "media_kind", "image")
        bounds, segments = column(batch, "bound"), column(batch, "num_segments")
        questions = [q if q is not None else self.default_question for q in column(batch, "question")]
        tasks = [t if t is not None else self.default_task for t in column(batch, "task")]

        for i, uris in enumerate(media):
            if errors[i] is None and len(uris) > self.max_images:
                errors[i] = format_row_error("limits", LimitError(f"row has {len(uris)} images, over preprocess.max_images_per_row={self.max_images}"))
        # One concurrent fetch for every URI of the batch: object-store latency overlaps across rows.
        wanted = list(dict.fromkeys(
            (uri, "video" if kind == "video" else "image")
            for err, uris, kind in zip(errors, media, kinds) if err is None for uri in uris
        ))  # fmt: skip
        fetched = {uri: data for (uri, _), data in zip(wanted, self.fetcher.fetch_many(wanted))}

        prepared: list[PreparedRow | None] = []
        try:
            for i in range(batch.num_rows):
                row = None
                if errors[i] is None:
                    try:
                        if kinds[i] == "video":
                            row = self._prepare_video(media[i][0], questions[i], bounds[i], segments[i], fetched)
                        else:
                            row = self._prepare_images(media[i], kinds[i], questions[i], fetched)
                    except _RowFailure as failure:
                        errors[i] = str(failure)
                prepared.append(row)
        finally:
            self.fetcher.release(fetched.values())  # temporary video files never outlive the batch

        def values(get):
            return [None if p is None else get(p) for p in prepared]

        def video_values(get):
            return [None if p is None or p.video is None else get(p.video) for p in prepared]

        out = set_column(batch, "question", questions, pa.string())
        out = set_column(out, "task", tasks, pa.string())
        out = set_column(out, "input_ids", values(lambda p: p.input_ids), pa.list_(pa.int32()))
        out = set_column(out, "pixels", values(lambda p: p.pixels), pa.large_binary())
        out = set_column(out, "num_tiles", values(lambda p: p.num_tiles), pa.list_(pa.int32()))
        out = set_column(out, "num_input_tokens", values(lambda p: len(p.input_ids)), pa.int32())
        out = set_column(out, "num_frames", video_values(lambda v: v.num_frames), pa.int32())
        out = set_column(out, "frame_indices", video_values(lambda v: v.frame_indices), pa.list_(pa.int32()))
        out = set_column(out, "frame_timestamps", video_values(lambda v: v.timestamps), pa.list_(pa.float64()))
        return set_column(out, "error", errors, pa.string())

    def _prepare_images(self, uris: list[str], kind: str, question: str, fetched: dict) -> PreparedRow:
        budget = None
        if len(uris) > 1:  # the reference's multi-image rule: the tile budget is shared
            budget = self.multi_image_max_num or max(1, self.preprocessor.max_num // len(uris))
        tiles, counts = [], []
        for uri in uris:
            try:
                image = self.preprocessor(_bytes(fetched[uri]), max_num=budget)
            except _RowFailure:
                raise
            except Exception as exc:  # noqa: BLE001 - decoders raise many types; any of them is this row's fault
                raise _RowFailure("decode", exc) from None
            tiles.append(image.tiles)
            counts.append(image.num_tiles)
        return self._with_prompt(question, counts, kind, tiles)

    def _prepare_video(self, uri: str, question: str, bound, segments, fetched: dict) -> PreparedRow:
        try:
            video = self.video(_bytes(fetched[uri]), segments or self.default_segments, tuple(bound) if bound else None)
        except _RowFailure:
            raise
        except LimitError as exc:
            raise _RowFailure("limits", exc) from None
        except Exception as exc:  # noqa: BLE001 - as for images
            raise _RowFailure("decode", exc) from None
        row = self._with_prompt(question, [1] * video.num_frames, "video", [video.tiles])
        row.video = video
        return row

    def _with_prompt(self, question: str, counts: list[int], kind: str, tiles: list[np.ndarray]) -> PreparedRow:
        try:
            prompt = self.prompts.build(question, counts, kind=kind)
            if prompt.num_tokens > self.max_input_tokens:
                raise PromptError(
                    f"prompt of {prompt.num_tokens} tokens ({sum(counts)} tiles) exceeds {self.max_input_tokens_name}="
                    f"{self.max_input_tokens}"
                )
        except RowError as exc:
            raise _RowFailure("prompt", exc) from None
        pixels = (np.concatenate(tiles) if len(tiles) > 1 else tiles[0]).tobytes()
        return PreparedRow(prompt.input_ids.astype(np.int32).tolist(), pixels, counts)


def _bytes(fetched: bytes | LocalFile | Exception) -> bytes | str:
    """The fetched media as bytes, or as a path for media kept in a file."""
    if isinstance(fetched, Exception):
        raise _RowFailure("fetch", fetched)
    return fetched.path if isinstance(fetched, LocalFile) else fetched
