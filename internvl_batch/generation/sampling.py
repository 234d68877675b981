"""Choosing the next token from the logits, on the device, without reading anything back to the host.

The same choices as transformers' `generate` with our decoding settings (`decoding.py`): greedy = argmax of
the float32 logits; sampling = temperature, then top-k, then top-p (nucleus), then a draw from the softmax,
in that order (the order of transformers' warpers); `min_new_tokens` forbids the stop token while a row has
generated fewer tokens than that.
"""

from __future__ import annotations

import torch

from internvl_batch.config import GenerationConfig


class Chooser:
    """`chooser(logits [rows, vocab] float32, generated [rows]) -> tokens [rows]`."""

    def __init__(self, generation: GenerationConfig, stop_token_id: int):
        self.generation, self.stop = generation, stop_token_id

    def __call__(self, logits: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        g = self.generation
        if g.min_new_tokens > 0:
            early = (generated.to(logits.device) < g.min_new_tokens)[:, None]
            is_stop = torch.arange(logits.shape[-1], device=logits.device)[None, :] == self.stop
            logits = logits.masked_fill(early & is_stop, float("-inf"))
        if not g.do_sample:
            return logits.argmax(dim=-1)
        return torch.multinomial(torch.softmax(self._warp(logits), dim=-1), num_samples=1).squeeze(-1)

    def _warp(self, logits: torch.Tensor) -> torch.Tensor:
        g = self.generation
        if g.temperature != 1.0:
            logits = logits / g.temperature
        if 0 < g.top_k < logits.shape[-1]:
            kth = torch.topk(logits, g.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if g.top_p < 1.0:
            ordered, order = torch.sort(logits, dim=-1, descending=False)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative <= 1 - g.top_p
            drop[:, -1] = False  # the most likely token always stays
            logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
        return logits
