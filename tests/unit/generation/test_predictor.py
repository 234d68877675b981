"""Batched generation equals one-row-at-a-time generation, token for token (float64 on the tiny checkpoint)."""

import pytest
import torch

from internvl_batch.config import BatchingConfig, GenerationConfig, ModelConfig
from internvl_batch.generation.predictor import GenerationRequest, Predictor, resolve_attention, resolve_dtype
from internvl_batch.imaging import ImagePreprocessor
from tests.media import encode, make_photo

SHORT = "Describe."
LONG = (
    "Please describe the image in detail: every object, its colour and position, the lighting, the mood, "
    "and anything written in it, as a careful annotator would for a dataset."
)
SIZES = {1: (448, 448), 5: (634, 634), 13: (800, 600)}


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    # No padding bound: rows of 1, 5 and 13 tiles share one micro-batch, the hardest case for left padding.
    return Predictor(
        ModelConfig(path=str(tiny_checkpoint), dtype="float64"),
        GenerationConfig(max_new_tokens=8),
        BatchingConfig(max_padding_fraction=1.0),
    )


@pytest.fixture(scope="module")
def requests(predictor):
    pre = ImagePreprocessor()
    rows = []
    for tiles, size in SIZES.items():
        image = pre(encode(make_photo(*size, seed=tiles), "PNG"))
        assert image.num_tiles == tiles
        for question in (SHORT, LONG):
            rows.append(GenerationRequest(predictor.prompts.build(question, [image.num_tiles]).input_ids, image.tiles))
    return rows


def test_batched_equals_one_at_a_time(predictor, requests):
    from internvl_batch.generation.batching import BatchLimits, plan_micro_batches

    lengths = [len(r.input_ids) for r in requests]
    assert len(plan_micro_batches(lengths, [len(r.tiles) for r in requests], 8, BatchLimits(max_padding=1.0))) == 1
    batched = predictor.generate(requests)
    single = [predictor.generate([r])[0] for r in requests]
    for b, s in zip(batched, single):
        assert b.output_ids == s.output_ids
        assert b.response == s.response and b.finish_reason == s.finish_reason


def test_split_micro_batches_keep_input_order(predictor, requests):
    whole = predictor.generate(requests)
    predictor.batching = BatchingConfig(max_batch_rows=2, max_batch_tiles=14)
    try:
        split = predictor.generate(list(reversed(requests)))
    finally:
        predictor.batching = BatchingConfig(max_padding_fraction=1.0)
    assert [r.output_ids for r in split] == [r.output_ids for r in reversed(whole)]


def test_different_prompts_give_different_outputs(predictor, requests):
    outputs = {tuple(r.output_ids) for r in predictor.generate(requests)}
    assert len(outputs) == len(requests)


def test_counts_and_length_finish(predictor, requests):
    result = predictor.generate(requests[:1])[0]
    assert result.num_input_tokens == len(requests[0].input_ids)
    assert result.num_output_tokens == 8 and result.finish_reason == "length"


def test_stop_token_ends_generation(predictor, requests):
    head = predictor.model.lm_head.weight
    saved = head[predictor.prompts.stop_token_id].clone()
    with torch.no_grad():  # make <|im_end|> the certain first choice
        head[predictor.prompts.stop_token_id] = predictor.model.model.language_model.norm.weight.sign() * 1e4
    try:
        result = predictor.generate(requests[:1])[0]
    finally:
        with torch.no_grad():
            head[predictor.prompts.stop_token_id] = saved
    assert (result.finish_reason, result.num_output_tokens, result.response) == ("stop", 1, "")


def test_text_only_and_multi_image_rows(predictor):
    pre = ImagePreprocessor(max_num=6)
    a, b = pre(encode(make_photo(500, 300), "JPEG")), pre(encode(make_photo(300, 500, seed=2), "JPEG"))
    import numpy as np

    rows = [
        GenerationRequest(predictor.prompts.build("Hello, who are you?", [], kind="none").input_ids, None),
        GenerationRequest(
            predictor.prompts.build("Compare.", [a.num_tiles, b.num_tiles], kind="images").input_ids,
            np.concatenate([a.tiles, b.tiles]),
        ),
    ]
    batched = predictor.generate(rows)
    assert [r.output_ids for r in batched] == [predictor.generate([r])[0].output_ids for r in rows]


def test_sampling_with_seed_is_reproducible(predictor, requests):
    predictor.generation = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5, seed=7)
    try:
        first, second = predictor.generate(requests[:2]), predictor.generate(requests[:2])
    finally:
        predictor.generation = GenerationConfig(max_new_tokens=8)
    assert [r.output_ids for r in first] == [r.output_ids for r in second]


def test_cpu_defaults():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_attention("auto", cpu) == "sdpa"
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_a_row_that_stops_early_in_a_batch_ends_at_its_stop_token(predictor, requests):
    """One row emits <|im_end|> after a few tokens while the other runs to max_new_tokens: in one batch, each
    row's tokens, count and finish reason are what it gets alone (the batch runs on for the other row)."""
    head = predictor.model.lm_head.weight
    stop = predictor.prompts.stop_token_id
    saved = head[stop].clone()
    early, late = requests[0], requests[3]
    alone_early = predictor.generate([early])[0].output_ids
    try:
        chosen = None
        # Make <|im_end|> the early row's choice at step k: its logit becomes scale x the logit of the token
        # that row picks at k. Pick (k, scale) for which the other row is not affected (checked, not assumed).
        for k in range(2, 6):
            for scale in (1.05, 1.5, 3.0):
                with torch.no_grad():
                    head[stop] = head[alone_early[k]] * scale
                a, b = predictor.generate([early])[0], predictor.generate([late])[0]
                if a.finish_reason == "stop" and a.num_output_tokens == k + 1 and b.finish_reason == "length":
                    chosen = (k, a, b)
                    break
            if chosen:
                break
        assert chosen, "no weight change made only the early row stop"
        k, alone_a, alone_b = chosen
        batched_a, batched_b = predictor.generate([early, late])
    finally:
        with torch.no_grad():
            head[stop] = saved
    assert batched_a.output_ids == alone_a.output_ids and batched_a.output_ids[-1] == stop
    assert (batched_a.num_output_tokens, batched_a.finish_reason) == (k + 1, "stop")
    assert batched_a.response == alone_a.response
    assert batched_b.output_ids == alone_b.output_ids and batched_b.num_output_tokens == 8
