"""What a model replica is asked and what it answers: `GenerationRequest`, `GenerationResult`, and how a
result is made from generated tokens (cut at the stop token) or from a row that does not fit in memory."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch

from internvl_batch.errors import GENERATE, OutOfMemoryError, format_row_error

log = logging.getLogger(__name__)


@dataclass
class GenerationRequest:
    """One prepared row: prompt token ids and the tiles of all its images, concatenated in prompt order."""

    input_ids: np.ndarray
    tiles: np.ndarray | None  # uint8 [n, 448, 448, 3], or None for a text-only prompt
    max_new_tokens: int | None = None  # per row (its task's limit); None: generation.max_new_tokens
    image_key: Hashable | None = None  # requests with the same key have identical tiles (features.py)


@dataclass
class GenerationResult:
    response: str | None
    output_ids: list[int]
    num_input_tokens: int
    num_output_tokens: int  # generated tokens, the stop token included
    finish_reason: str | None  # "stop" (ended with <|im_end|>) or "length" (hit max_new_tokens)
    error: str | None = None  # set when the row could not be generated (it does not fit in memory alone)


def result_of(prompts, num_input_tokens: int, generated: list[int]) -> GenerationResult:
    """The result of a row that generated `generated` (token ids): cut after the stop token, decoded."""
    stop = prompts.stop_token_id
    if stop in generated:
        generated = generated[: generated.index(stop) + 1]
        finish = "stop"
    else:
        finish = "length"
    return GenerationResult(
        response=prompts.decode(generated),
        output_ids=generated,
        num_input_tokens=num_input_tokens,
        num_output_tokens=len(generated),
        finish_reason=finish,
    )


def does_not_fit_alone(request: GenerationRequest) -> GenerationResult:
    """The error result of a row that does not fit in memory even alone."""
    tiles = 0 if request.tiles is None else len(request.tiles)
    log.warning("a row of %d tokens and %d tiles does not fit in memory alone", len(request.input_ids), tiles)
    message = format_row_error(
        GENERATE,
        OutOfMemoryError(
            f"a row of {len(request.input_ids)} tokens and {tiles} tiles does not fit in memory even alone; "
            "lower preprocess.max_num or video segments"
        ),
    )
    return GenerationResult(None, [], len(request.input_ids), 0, None, error=message)


def pad_tokens(pad_token_id: int, device, sequences: list[np.ndarray], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to the longest (with the pad token) and the mask of real tokens."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        place = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, place] = seq
        mask[row, place] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
