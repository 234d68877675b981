"""The predictor: one model replica, loaded once, called per batch of prepared rows.

A row arrives as token ids (from `PromptBuilder`) and uint8 tiles (from `ImagePreprocessor`). For each group
of rows it prefills together, the predictor normalises the tiles on the device, runs the vision tower in
chunks and writes the image features into the token embeddings at the `<IMG_CONTEXT>` positions (what the
reference does). Then one of two engines (`generation.engine`) generates, stopping at `<|im_end|>`:
- `static` (`engine.py`, `slots.py`): the rows of the call flow through a fixed set of cache slots; a row
  leaves at its stop token or limit and a waiting row takes its slot; decode steps never wait on the host;
- `generate`: transformers' `generate` per micro-batch, left-padded, with an attention mask.
Out of memory halves the work in flight and lowers the replica's budget (down to one row: an error row).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import numpy as np
import torch

from internvl_batch.config import BatchingConfig, GenerationConfig, ModelConfig
from internvl_batch.generation.auto_batch import resolve_limits
from internvl_batch.generation.batching import BatchLimits, plan_micro_batches
from internvl_batch.generation.decoding import decoding_config, neutral_generation_defaults
from internvl_batch.generation.engine import EngineRow, engine_for, plan_run, static_engine_for
from internvl_batch.generation.faults import is_out_of_memory
from internvl_batch.generation.features import SharedImageFeatures
from internvl_batch.generation.pixels import normalize_tiles
from internvl_batch.generation.placement import replica_device_map, resolve_attention, resolve_device, resolve_dtype
from internvl_batch.generation.requests import (
    GenerationRequest,
    GenerationResult,
    does_not_fit_alone,
    pad_tokens,
    result_of,
)
from internvl_batch.model.bundle import ModelBundle
from internvl_batch.model.checkpoint import CheckpointInfo
from internvl_batch.model.loader import load_model

log = logging.getLogger(__name__)


class Predictor:
    """Loads a checkpoint once; `generate(requests)` answers a list of prepared rows in their order."""

    def __init__(
        self,
        model: ModelConfig,
        generation: GenerationConfig | None = None,
        batching: BatchingConfig | None = None,
        model_name: str | None = None,
        storage=None,
        reserved_gpus: float | None = None,
    ) -> None:
        """`reserved_gpus`: what Ray reserved for this replica (the pipeline passes it; None outside one)."""
        self.generation = generation or GenerationConfig()
        self.batching = batching or BatchingConfig()
        self.learned_max_tokens: int | None = None  # the micro-batch token budget after an out-of-memory error
        self.out_of_memory_splits = 0
        self.shared_features = SharedImageFeatures()
        self.device = resolve_device(model.device, reserved_gpus)
        self.dtype = resolve_dtype(model.dtype, self.device)
        self.engine_kind = engine_for(self.generation.engine, model.attn_implementation)
        if self.engine_kind == "static" and model.attn_implementation in ("auto", "flash_attention_2"):
            if model.attn_implementation == "flash_attention_2":
                log.warning("generation.engine=static attends with sdpa (a mask, no unpadding): not flash_attention_2")
            self.attn_implementation = "sdpa"
        else:
            self.attn_implementation = resolve_attention(model.attn_implementation, self.device, self.dtype)
        bundle = ModelBundle.load(model, storage, weights=True, name=model_name)
        self.info: CheckpointInfo = bundle.info
        self.tokenizer, self.prompts = bundle.tokenizer, bundle.prompts
        self.device_map = replica_device_map(self.info.num_llm_layers, model.gpus_per_replica, self.device)
        self.model = load_model(
            self.info, self.dtype, self.device, self.attn_implementation, self.prompts.image_context_id, self.device_map
        )
        neutral_generation_defaults(self.model)
        self._embed = self.model.get_input_embeddings()
        self._start_engine()
        log.info(
            "loaded %s (%s layout) on %s as %s with %s attention, %s engine",
            self.info.name,
            self.info.layout,
            self.device,
            self.dtype,
            self.attn_implementation,
            self.engine_kind,
        )

    @classmethod
    def from_parts(cls, model, prompts, device, dtype, generation=None, batching=None) -> Predictor:
        """A predictor around an already-built model (benchmarks of architectures without a checkpoint).
        `prompts` needs `image_context_id`, `stop_token_id`, `pad_token_id` and `decode`."""
        self = cls.__new__(cls)
        self.generation, self.batching = generation or GenerationConfig(), batching or BatchingConfig()
        self.device, self.dtype, self.model, self.prompts = torch.device(device), dtype, model, prompts
        self.device_map, self._embed = None, model.get_input_embeddings()
        neutral_generation_defaults(model)
        self.learned_max_tokens, self.out_of_memory_splits = None, 0
        self.shared_features = SharedImageFeatures()
        self.engine_kind = engine_for(self.generation.engine, model.config.text_config._attn_implementation)
        self._start_engine()
        return self

    def _start_engine(self) -> None:
        """The static engine where it was asked for and the model allows it, else `generate`."""
        self.engine = None
        if self.engine_kind == "static":
            self.engine = static_engine_for(self.model, self.generation, self.prompts, self.device, self.device_map)
        if self.engine is None:
            self.engine_kind = "generate"

    @property
    def budget(self) -> tuple[int, int]:
        """(rows, tokens) at once on this replica: `batching`, with `auto` resolved (once per config)."""
        if getattr(self, "_budget_of", None) is not self.batching:
            self._budget = resolve_limits(self.batching, self.model, self.device, self.dtype, self.device_map)
            self._budget_of = self.batching
        return self._budget

    def limits(self) -> BatchLimits:
        """The micro-batch budget: `batching` (auto resolved), the token budget lowered after out of memory."""
        b = self.batching
        rows, tokens = self.budget
        if self.learned_max_tokens is not None:
            tokens = min(tokens, self.learned_max_tokens)
        return BatchLimits(rows, tokens, b.max_batch_tiles, b.max_padding_fraction)

    def generate(self, requests: list[GenerationRequest], watch=None) -> list[GenerationResult]:
        """Answers in the order of `requests`, computed in length-sorted micro-batches.

        `watch(positions)`, if given, is entered as a context manager around each micro-batch, with the
        positions in `requests` of its rows (the model stage records them as in flight: `crashes.py`)."""
        self.shared_features = SharedImageFeatures(requests)  # the vision tower runs once per shared image
        if self.engine is not None:
            return self._generate_static(requests, watch)
        lengths = [len(r.input_ids) for r in requests]
        tiles = [0 if r.tiles is None else int(r.tiles.shape[0]) for r in requests]
        results: list[GenerationResult | None] = [None] * len(requests)
        # One generate call has one token limit: rows are grouped by theirs, then micro-batched.
        groups: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.max_new_tokens or self.generation.max_new_tokens, []).append(i)
        for new_tokens, members in sorted(groups.items()):
            pending = members
            while pending:
                limits = self.limits()
                planned = plan_micro_batches(
                    [lengths[i] for i in pending], [tiles[i] for i in pending], new_tokens, limits
                )
                done: set[int] = set()
                for batch in planned:
                    rows = [pending[j] for j in batch]
                    with watch(rows) if watch is not None else nullcontext():
                        answers = self._generate_fitting([requests[i] for i in rows], new_tokens)
                    for i, result in zip(rows, answers):
                        results[i] = result
                    self.shared_features.finished([requests[i] for i in rows])
                    done.update(rows)
                    if self.limits() != limits:  # an out-of-memory error lowered the budget: plan the rest again
                        break
                pending = [i for i in pending if i not in done]
        return results  # type: ignore[return-value]

    def _generate_static(self, requests: list[GenerationRequest], watch=None) -> list[GenerationResult]:
        """All rows through the static engine; out of memory: fewer slots, and the unfinished rows again."""
        results: list[GenerationResult | None] = [None] * len(requests)
        pending = [
            EngineRow(
                i,
                len(r.input_ids),
                0 if r.tiles is None else int(r.tiles.shape[0]),
                r.max_new_tokens or self.generation.max_new_tokens,
            )
            for i, r in enumerate(requests)
        ]

        def embed(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            group = [requests[i] for i in indices]
            embeds = self._prompt_embeddings(group, left=False)
            lengths = torch.tensor([len(r.input_ids) for r in group], device=embeds.device)
            return embeds, lengths

        def done(index: int, tokens: list[int]) -> None:
            results[index] = result_of(self.prompts, len(requests[index].input_ids), tokens)
            # Shared features are released when their last row is done, not when prefilled: a row that has
            # to start again after an out-of-memory error finds them.
            self.shared_features.finished([requests[index]])

        while pending:
            limits = self.limits()
            shape = plan_run(pending, limits)
            if self.generation.do_sample and self.generation.seed is not None:
                torch.manual_seed(self.generation.seed)
            try:
                with watch([r.index for r in pending]) if watch is not None else nullcontext():
                    self.engine.run(pending, shape, limits, embed, done)
                pending = []
            except Exception as exc:  # only out-of-memory is handled here; anything else is re-raised
                if not is_out_of_memory(exc):
                    raise
                self._release_memory()
                failed = set()
                if shape.slots == 1:  # one row at a time does not fit: the row in its slot, or else (the cache
                    # itself did not fit) the row whose prompt and limit set the cache's length
                    failed = set(self.engine.in_flight) or {
                        max(pending, key=lambda r: r.length + r.max_new_tokens).index
                    }
                for index in failed:
                    results[index] = does_not_fit_alone(requests[index])
                    self.shared_features.finished([requests[index]])
                if not failed:
                    self.out_of_memory_splits += 1
                    self._lower_budget(shape.slots * shape.length, shape.slots)
                pending = [r for r in pending if r.index in self.engine.unfinished and r.index not in failed]
        return results  # type: ignore[return-value]

    def _generate_fitting(self, requests: list[GenerationRequest], new_tokens: int) -> list[GenerationResult]:
        """Generate; a micro-batch that runs out of memory is halved and retried, down to single rows."""
        try:
            return self._generate_micro_batch(requests, new_tokens)
        except Exception as exc:  # only out-of-memory is handled here; anything else is re-raised
            if not is_out_of_memory(exc):
                raise
        self._release_memory()
        if len(requests) == 1:
            return [does_not_fit_alone(requests[0])]
        self.out_of_memory_splits += 1
        self._lower_budget(len(requests) * (max(len(r.input_ids) for r in requests) + new_tokens), len(requests))
        half = len(requests) // 2
        return self._generate_fitting(requests[:half], new_tokens) + self._generate_fitting(requests[half:], new_tokens)

    def _lower_budget(self, tokens: int, rows: int) -> None:
        # The micro-batch that ran out of memory cost `tokens` (rows x (longest prompt + new tokens)); later
        # micro-batches are planned at half that, what its halves are about to be, rather than running out of
        # memory again (possibly late in decoding) on every similar batch.
        budget = max(1, tokens // 2)
        if self.learned_max_tokens is None or budget < self.learned_max_tokens:
            self.learned_max_tokens = budget
            log.warning(
                "out of memory on a micro-batch of %d rows (%d tokens); splitting it, and planning this "
                "replica's micro-batches at %d tokens from now on (budget: %d)",
                rows,
                tokens,
                budget,
                self.budget[1],
            )
        else:
            log.info("out of memory on a micro-batch of %d rows (%d tokens); splitting it", rows, tokens)

    def _release_memory(self) -> None:
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def _prompt_embeddings(self, requests: list[GenerationRequest], left: bool) -> torch.Tensor:
        """[rows, longest prompt, hidden]: token embeddings, image features at the `<IMG_CONTEXT>` positions,
        padded on the left (for `generate`'s mask) or the right (the static engine's slots)."""
        input_ids, _ = pad_tokens(self.prompts.pad_token_id, self.device, [r.input_ids for r in requests], left)
        embeds = self._embed(input_ids)
        features = self.shared_features.features_for(requests, self._image_features)
        if features is not None:
            slots = input_ids == self.prompts.image_context_id
            if int(slots.sum()) != features.shape[0] * features.shape[1]:
                raise ValueError(
                    f"{int(slots.sum())} image token positions for {features.shape[0]} tiles x {features.shape[1]} tokens"
                )
            embeds = embeds.masked_scatter(slots.unsqueeze(-1), features.to(embeds.dtype))
        return embeds

    @torch.inference_mode()
    def _generate_micro_batch(self, requests: list[GenerationRequest], new_tokens: int) -> list[GenerationResult]:
        _, attention_mask = pad_tokens(
            self.prompts.pad_token_id, self.device, [r.input_ids for r in requests], left=True
        )
        embeds = self._prompt_embeddings(requests, left=True)
        if self.generation.do_sample and self.generation.seed is not None:
            torch.manual_seed(self.generation.seed)
        decoding = decoding_config(self.generation, new_tokens, self.prompts.stop_token_id, self.prompts.pad_token_id)
        output = self.model.generate(inputs_embeds=embeds, attention_mask=attention_mask, generation_config=decoding)
        generated = output.tolist()  # one device-to-host copy for the micro-batch, not one per row
        return [result_of(self.prompts, len(r.input_ids), row) for r, row in zip(requests, generated)]

    def _image_features(self, tiles: np.ndarray) -> torch.Tensor:
        """`[n_tiles, 256, hidden]` projected features, the vision tower run in bounded chunks."""
        chunk = self.batching.vision_chunk_tiles
        parts = []
        for start in range(0, len(tiles), chunk):
            pixels = normalize_tiles(tiles[start : start + chunk], self.device, self.dtype)
            parts.append(self.model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output)
        return torch.cat(parts) if len(parts) > 1 else parts[0]
