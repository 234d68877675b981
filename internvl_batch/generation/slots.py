"""The static engine's device state: a KV cache in row slots, and the two steps that run on it.

`slots` rows generate at once; each slot holds one row's keys and values in `length` columns, per layer on
that layer's device, allocated once per (slots, length) and never grown. A row's tokens sit at columns
0..n-1 of its slot (no left padding), so every row has its own write position and a row can leave or join
without touching the others. The attention mask is computed from the rows' lengths on the device, so:

- `prefill(...)` writes the prompts of joining rows into their slots (right-padded, in one forward) and
  picks each one's first token;
- `decode_step()` feeds every slot its last token at its own position, picks the next, and updates lengths,
  token counts and the `active` flags, all as tensor operations: it never reads a value back to the host, so
  a step queues its kernels without waiting, and has fixed shapes (it can be compiled once per bucket and,
  on CUDA, captured as a graph). Slots that are empty or finished still compute (shapes are fixed) until the
  scheduler (`engine.py`) hands them a new row.

This drives the text model's decoder layers directly (what `Qwen2Model`/`LlamaModel.forward` do: rotary
embeddings, layers, final norm) so that no mask or cache bookkeeping of transformers runs per step.
"""

from __future__ import annotations

import torch

from internvl_batch.generation.sampling import Chooser

ATTENTION = "internvl_batch_sdpa"  # the text model's attention while the static engine runs it


def decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' sdpa attention, except that a one-token query with grouped KV heads is always computed
    as the heads of each KV head querying it together (what transformers does only outside torch.compile):
    compiled, its sdpa copies every KV head `groups` times at every layer and step, which for 4B (8 query
    heads per KV head) is 8x the cache read per step."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] != 1 or groups == 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    rows, heads, _, dim = query.shape
    grouped = query.reshape(rows, heads // groups, groups, dim)
    if query.device.type == "cpu" and torch.compiler.is_compiling():
        # Compiled on the CPU, three small operations fuse, where the CPU's fused kernel costs ~0.4 ms a call
        # at any size (blocking, buffers). Eager, and on a GPU, the fused kernel.
        scores = torch.matmul(grouped, key.transpose(2, 3)) * (scaling if scaling is not None else dim**-0.5)
        if attention_mask is not None:
            scores = (
                scores.masked_fill(~attention_mask, float("-inf"))
                if attention_mask.dtype == torch.bool
                else scores + attention_mask
            )
        out = torch.matmul(torch.softmax(scores, dim=-1), value)
    else:
        out = torch.nn.functional.scaled_dot_product_attention(
            grouped, key, value, attn_mask=attention_mask, scale=scaling
        )
    return out.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


def use_decode_attention(text_model) -> None:
    """Run the text model's sdpa attention through `decode_attention` (the same numbers, eager or compiled),
    for every caller of the model, with transformers' sdpa masks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, decode_attention)
    # transformers builds no mask at all for an attention name without a mask function: `generate` on this
    # model (another caller of the same weights) would then ignore padding and causality.
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
    if text_model.config._attn_implementation == "sdpa":
        text_model.config._attn_implementation = ATTENTION


class SlotCache:
    """Keys and values of `slots` rows x `length` columns for every decoder layer (transformers' cache
    protocol: the attention layers call `update`)."""

    def __init__(self, layer_devices: list[torch.device], kv_heads: int, head_dim: int, slots: int, length: int, dtype):
        shape = (slots, kv_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=d) for d in layer_devices]
        self.values = [torch.zeros(shape, dtype=dtype, device=d) for d in layer_devices]
        self.slots, self.length = slots, length
        self._rows = {d: torch.arange(slots, device=d) for d in set(layer_devices)}  # each slot's own index
        self._write: dict[torch.device, tuple] = {}  # decode: per device, (slot, column) of each slot's token
        self._prefill_rows: dict[torch.device, torch.Tensor] | None = None  # prefill: slot of each joining row

    def decode_at(self, positions: torch.Tensor) -> None:
        """The next `update`s write one token per slot at column `positions[slot]`."""
        self._prefill_rows = None
        self._write = {d: (rows, positions.to(d, non_blocking=True)) for d, rows in self._rows.items()}

    def prefill_into(self, rows: torch.Tensor) -> None:
        """The next `update`s write whole prompts (columns 0..width-1) into slots `rows`."""
        self._prefill_rows = {d: rows.to(d, non_blocking=True) for d in self._rows}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self._prefill_rows is not None:
            rows = self._prefill_rows[keys.device]
            width = key_states.shape[2]
            keys[rows, :, :width] = key_states
            values[rows, :, :width] = value_states
            return key_states, value_states  # a joining row attends only to its own prompt
        # Indexed assignment, not scatter_: torch.compile turns a scatter_ into a buffer input into a copy of
        # the whole cache per layer and step, while it updates an index_put_ in place.
        rows, columns = self._write[keys.device]
        keys[rows, :, columns] = key_states[:, :, 0]
        values[rows, :, columns] = value_states[:, :, 0]
        return keys, values

    def keep(self, slots: torch.Tensor) -> SlotCache:
        """A smaller cache holding only `slots`, in that order (the tail of a run, when few rows are left)."""
        smaller = SlotCache.__new__(SlotCache)
        smaller.keys = [k.index_select(0, slots.to(k.device)) for k in self.keys]
        smaller.values = [v.index_select(0, slots.to(v.device)) for v in self.values]
        smaller.slots, smaller.length = len(slots), self.length
        smaller._rows = {d: torch.arange(len(slots), device=d) for d in self._rows}
        smaller._write, smaller._prefill_rows = {}, None
        return smaller


class DecodeState:
    """Per-slot decoding state, on the device where the tokens are chosen (the output head's)."""

    def __init__(self, slots: int, max_new_tokens: int, device: torch.device, pad_token_id: int):
        def zeros(dtype=torch.int64):
            return torch.zeros(slots, dtype=dtype, device=device)

        self.tokens = zeros()  # the last chosen token: the next step's input
        self.lengths = zeros()  # columns of the slot's cache in use = the position of the next input token
        self.steps = zeros()  # tokens generated so far
        self.limits = zeros()  # the row's max_new_tokens
        self.active = zeros(torch.bool)  # still generating (not stopped, below its limit)
        # One column more than any row generates: a finished row's step writes there, never over its tokens.
        self.out = torch.full((slots, max_new_tokens + 1), pad_token_id, dtype=torch.int64, device=device)
        self.columns = torch.arange(max_new_tokens + 1, device=device)

    def tensors(self) -> list[torch.Tensor]:
        return [self.tokens, self.lengths, self.steps, self.limits, self.active, self.out]

    def keep(self, slots: torch.Tensor) -> DecodeState:
        smaller = DecodeState.__new__(DecodeState)
        for name in ("tokens", "lengths", "steps", "limits", "active", "out"):
            setattr(smaller, name, getattr(self, name).index_select(0, slots))
        smaller.columns = self.columns
        return smaller


class SlotModel:
    """The text model's pieces the two steps call, and the steps themselves."""

    def __init__(self, model, chooser: Chooser, stop_token_id: int):
        text = model.model.language_model
        use_decode_attention(text)
        self.embed, self.layers, self.norm, self.head = text.embed_tokens, text.layers, text.norm, model.lm_head
        self.layers = list(text.layers[: text.config.num_hidden_layers])
        self.rotary_emb = text.rotary_emb
        self.eager = text.config._attn_implementation == "eager"  # eager attention adds the mask: make it 0/-inf
        self.chooser, self.stop = chooser, stop_token_id
        self.head_device = self.head.weight.device

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: SlotCache):
        """The decoder over `embeds` [rows, tokens, hidden] with a boolean `mask` [rows, 1, tokens, columns]."""
        if self.eager:
            mask = torch.zeros(mask.shape, dtype=embeds.dtype, device=mask.device).masked_fill_(
                ~mask, torch.finfo(embeds.dtype).min
            )
        hidden = embeds
        position_embeddings = _rotary_forward(self.rotary_emb, cache.length)(hidden, positions)
        for layer in self.layers:
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_ids=positions,
                position_embeddings=position_embeddings,
                cache=cache,
                use_cache=True,
            )
        return self.norm(hidden)

    def prefill(self, state: DecodeState, cache: SlotCache, slots, embeds, lengths, limits) -> None:
        """Rows join: `embeds` [k, width, hidden] right-padded prompts of lengths `lengths` [k], into `slots`
        [k] (all tensors on the device); each row's first token is chosen from its last prompt position."""
        k, width = embeds.shape[0], embeds.shape[1]
        columns = torch.arange(width, device=embeds.device)
        causal = columns[None, :] <= columns[:, None]
        mask = (causal[None] & (columns[None, None, :] < lengths[:, None, None]))[:, None]
        positions = columns[None].expand(k, width)
        cache.prefill_into(slots)
        hidden = self.forward(embeds, mask, positions, cache)
        last = hidden[torch.arange(k, device=hidden.device), lengths.to(hidden.device) - 1]
        steps = torch.zeros(k, dtype=torch.int64, device=self.head_device)
        first = self.chooser(self.head(last).float(), steps)
        slots, lengths, limits = (t.to(state.tokens.device) for t in (slots, lengths, limits))
        state.tokens[slots] = first
        state.lengths[slots] = lengths
        state.steps[slots] = 1
        state.limits[slots] = limits
        state.active[slots] = (first != self.stop) & (limits > 1)
        row = torch.full((k, state.out.shape[1]), -1, dtype=torch.int64, device=state.out.device)
        row[:, 0] = first
        state.out[slots] = row

    def decode_step(self, state: DecodeState, cache: SlotCache, columns: torch.Tensor) -> None:
        """One token for every slot; `columns` = arange(cache length) on the first layer's device."""
        embeds = self.embed(state.tokens[:, None])
        lengths = state.lengths.to(columns.device, non_blocking=True)
        mask = (columns[None, :] <= lengths[:, None])[:, None, None, :]
        cache.decode_at(state.lengths)
        hidden = self.forward(embeds, mask, lengths[:, None], cache)
        chosen = self.chooser(self.head(hidden[:, -1]).float(), state.steps)
        active = state.active
        chosen = torch.where(active, chosen, torch.full_like(chosen, -1))
        state.out.scatter_(1, state.steps[:, None], chosen[:, None])
        grown = active.to(torch.int64)
        state.steps.add_(grown)
        state.lengths.add_(grown)
        state.active.logical_and_((chosen != self.stop) & (state.steps < state.limits))
        state.tokens.copy_(torch.where(active, chosen, state.tokens))


def _rotary_forward(rotary, length: int):
    """The rotary embedding's forward for positions below `length`. transformers wraps it to check the longest
    position at every call for "dynamic" scaling (two reads back to the host per step). Below the model's
    original context length, with frequencies never grown, dynamic scaling changes nothing, so there the
    forward is called without the check (the same numbers, no synchronisation); beyond it, with the check."""
    forward = type(rotary).forward
    plain = getattr(forward, "__wrapped__", None)
    original = getattr(rotary, "original_max_seq_len", None)
    unchanged = original is not None and getattr(rotary, "max_seq_len_cached", original) <= original
    if plain is None or not unchanged or length > original:
        return rotary
    return lambda x, positions: plain(rotary, x, positions)
