"""The static engine's scheduler: rows flow through a fixed set of slots (continuous batching).

A run takes the rows of one `Predictor.generate` call, with one cache of `slots` x `length` (`plan_run`:
`length` holds the longest row's prompt and token limit, both rounded to buckets so that a compiled decode
step is reused across calls). Rows join their slots in prefill groups of similar prompt length, longest token
limit first (so that the longest rows are not what is left running at the end); then decode steps run
without reading anything back, and every `generation.poll_steps` steps (or sooner, when a row must have
reached its limit) one small copy says which rows stopped. Their tokens are handed back at once and
waiting rows take their slots. When nothing waits and at most half the slots are busy, the busy ones move to
a smaller cache, so the last rows of a run do not pay for empty slots.

transformers' continuous batching (`generate_batch`) takes token ids only: it has no way to take our image
features at the `<IMG_CONTEXT>` positions, which is why this small scheduler exists.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from internvl_batch.generation.batching import BatchLimits, plan_micro_batches
from internvl_batch.generation.sampling import Chooser
from internvl_batch.generation.slots import ATTENTION, DecodeState, SlotCache, SlotModel

log = logging.getLogger(__name__)

LENGTH_BUCKET = 256  # cache lengths are multiples of this
MIN_SLOTS = 8  # slot counts are powers of two from this


@dataclass
class EngineRow:
    index: int  # the row's position in the caller's list
    length: int  # prompt tokens
    tiles: int
    max_new_tokens: int


@dataclass
class RunShape:
    slots: int
    length: int


def bucket_slots(rows: int, most: int) -> int:
    """The smallest power of two (at least MIN_SLOTS) that holds `rows`, at most `most` (at least 1)."""
    size = MIN_SLOTS
    while size < rows:
        size *= 2
    return max(1, min(size, most))


def plan_run(rows: list[EngineRow], limits: BatchLimits) -> RunShape:
    """Cache length for the longest row (prompt + token limit, rounded up to LENGTH_BUCKET), and as many slots
    as the rows need, the row limit and the token budget (slots x length) allow."""
    need = max(r.length + r.max_new_tokens for r in rows)
    length = -(-need // LENGTH_BUCKET) * LENGTH_BUCKET
    most = max(1, min(limits.max_rows, limits.max_tokens // length))
    return RunShape(bucket_slots(len(rows), most), length)


class StaticEngine:
    """Runs rows through slots; owns the (compiled) decode step, reused across runs of the same shape."""

    def __init__(self, model, chooser, stop_token_id: int, pad_token_id: int, compile_step: bool, poll_steps: int):
        self.slot_model = SlotModel(model, chooser, stop_token_id)
        text = model.config.text_config
        self.kv_heads = text.num_key_value_heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.dtype = self.slot_model.head.weight.dtype
        self.layer_devices = [next(layer.parameters()).device for layer in self.slot_model.layers]
        self.pad_token_id, self.poll_steps = pad_token_id, poll_steps
        self.decode_step = self.slot_model.decode_step
        if compile_step:
            cuda = self.layer_devices[0].type == "cuda"
            # CUDA graphs ("reduce-overhead") replay one step in a single launch; on the CPU, fusion only.
            # The weights do not change between steps: no guard checks them at every call (milliseconds at 36+
            # layers); a run's shapes and tensors are guarded as usual.
            guards = {"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe}
            self.decode_step = torch.compile(
                self.decode_step, mode="reduce-overhead" if cuda else None, dynamic=False, options=guards
            )
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self.steps_run = 0  # decode steps (for tests and benchmarks)

    @torch.inference_mode()
    def run(
        self,
        rows: list[EngineRow],
        shape: RunShape,
        limits: BatchLimits,
        embed: Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]],
        done: Callable[[int, list[int]], None],
    ) -> None:
        """Generate every row of `rows`; `done(index, tokens)` as each finishes (its stop token included).
        `embed(indices)` gives the right-padded prompt embeddings [k, width, hidden] and lengths [k] of those
        rows. An exception (out of memory) leaves the unfinished rows to the caller (`unfinished`)."""
        self.unfinished = {r.index for r in rows}
        self.in_flight: list[int] = []  # rows in slots when an exception left `run`
        busy: dict[int, tuple[EngineRow, int]] = {}  # slot -> (row, decode steps already run when it joined)
        try:
            self._run(rows, shape, limits, embed, done, busy)
        except BaseException:
            self.in_flight = [row.index for row, _ in busy.values()]
            raise

    def _run(self, rows, shape, limits, embed, done, busy) -> None:
        slots = shape.slots
        cache = SlotCache(self.layer_devices, self.kv_heads, self.head_dim, slots, shape.length, self.dtype)
        state = DecodeState(slots, max(r.max_new_tokens for r in rows), self.slot_model.head_device, self.pad_token_id)
        self._mark_static(cache, state)
        columns = torch.arange(shape.length, device=self.layer_devices[0])
        waiting = deque(sorted(rows, key=lambda r: (-r.max_new_tokens, -r.length, r.index)))
        free = list(range(slots - 1, -1, -1))
        steps = 0
        while waiting or busy:
            if waiting and free and (len(free) >= max(1, slots // 8) or not busy):
                self._admit(waiting, free, busy, steps, state, cache, limits, embed)
            # Poll after poll_steps steps, or sooner when a row must have reached its token limit by then.
            todo = min([self.poll_steps] + [row.max_new_tokens - 1 - (steps - at) for row, at in busy.values()])
            for _ in range(max(todo, 0)):
                self._step(state, cache, columns)
                steps += 1
                self.steps_run += 1
            for slot, tokens in self._finished(state, busy):
                done(busy[slot][0].index, tokens)
                self.unfinished.discard(busy[slot][0].index)
                del busy[slot]
                free.append(slot)
            if not waiting and busy and len(busy) <= slots // 2 and slots > MIN_SLOTS:
                cache, state, free, slots = self._shrink(cache, state, busy, slots)

    def _step(self, state, cache, columns) -> None:
        try:
            self.decode_step(state, cache, columns)
        except torch._dynamo.exc.TorchDynamoException as exc:
            # The compiler failed on this step (before it ran: nothing changed); device errors and out of
            # memory are not compiler exceptions and go on up. Uncompiled, the step computes the same.
            if self.decode_step is self.slot_model.decode_step:
                raise
            log.warning("compiling the decode step failed (%s); running it uncompiled", str(exc).splitlines()[0])
            self.decode_step = self.slot_model.decode_step
            self.decode_step(state, cache, columns)

    def _admit(self, waiting, free, busy, steps, state, cache, limits, embed) -> None:
        joining = [waiting.popleft() for _ in range(min(len(free), len(waiting)))]
        longest = max(r.max_new_tokens for r in joining)
        prefill = BatchLimits(len(joining), limits.max_tokens, limits.max_tiles, limits.max_padding)
        for group in plan_micro_batches([r.length for r in joining], [r.tiles for r in joining], longest, prefill):
            members = [joining[i] for i in group]
            slots = [free.pop() for _ in members]
            for slot, row in zip(slots, members):
                busy[slot] = (row, steps)
            embeds, lengths = embed([r.index for r in members])
            device = embeds.device
            self.slot_model.prefill(
                state,
                cache,
                torch.tensor(slots, device=device),
                embeds,
                lengths,
                torch.tensor([r.max_new_tokens for r in members], device=device),
            )

    def _finished(self, state: DecodeState, busy: dict) -> list[tuple[int, list[int]]]:
        """The busy slots whose row stopped, with its tokens: one copy of the flags, one of the finished rows."""
        if not busy:
            return []
        active, counts = torch.stack([state.active.to(torch.int64), state.steps]).tolist()
        ended = [slot for slot in busy if not active[slot]]
        if not ended:
            return []
        index = torch.tensor(ended, device=state.out.device)
        tokens = state.out.index_select(0, index)[:, : max(counts[s] for s in ended)].tolist()
        return [(slot, row[: counts[slot]]) for slot, row in zip(ended, tokens)]

    def _shrink(self, cache, state, busy, slots):
        """Move the busy rows to a cache of the smallest bucket that holds them."""
        size = bucket_slots(len(busy), slots)
        kept = sorted(busy)
        spare = [s for s in range(slots) if s not in busy][: size - len(kept)]
        order = kept + spare  # new slot i holds old slot order[i]
        index = torch.tensor(order, device=state.out.device)
        cache, state = cache.keep(index), state.keep(index)
        self._mark_static(cache, state)
        moved = {new: busy[old] for new, old in enumerate(order) if old in busy}
        busy.clear()
        busy.update(moved)  # the caller's dict: an exception later still names the rows in flight
        free = list(range(size - 1, len(kept) - 1, -1))
        return cache, state, free, size

    def _mark_static(self, cache: SlotCache, state: DecodeState) -> None:
        # A captured CUDA graph replays on fixed addresses: tell the compiler these tensors keep theirs.
        if self.decode_step is not self.slot_model.decode_step and self.layer_devices[0].type == "cuda":
            for tensor in cache.keys + cache.values + state.tensors():
                torch._dynamo.mark_static_address(tensor)


def engine_for(engine: str, attn_implementation: str) -> str:
    """`generation.engine` resolved: auto = static, except where flash-attention was asked for by name
    (the static engine attends through sdpa with a mask)."""
    if engine == "auto":
        return "generate" if attn_implementation == "flash_attention_2" else "static"
    return engine


def static_engine_for(model, generation, prompts, device, device_map) -> StaticEngine | None:
    """The static engine for a loaded model, or None (with one line saying why) where it cannot run: it needs
    full attention in every layer, through sdpa or eager. `prompts`: the stop and pad tokens."""
    text = model.config.text_config
    kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"} or text._attn_implementation not in ("sdpa", "eager", ATTENTION):
        log.warning(
            "the static engine needs full attention through sdpa or eager (this model: %s layers, %s); "
            "using generation.engine=generate",
            "/".join(sorted(kinds)),
            text._attn_implementation,
        )
        return None
    compile_step = generation.compile
    if compile_step is None:  # compiles pay off where launches cost: on the GPU, one device per replica
        compile_step = device.type == "cuda" and device_map is None
    chooser = Chooser(generation, prompts.stop_token_id)
    return StaticEngine(
        model, chooser, prompts.stop_token_id, prompts.pad_token_id, compile_step, generation.poll_steps
    )
