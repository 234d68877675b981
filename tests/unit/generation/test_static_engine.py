"""The static engine gives transformers' `generate` tokens, without waiting on the host between steps.

Greedy tokens are compared in float32 on the tiny Qwen2 and InternLM2 checkpoints with what today's path
(`generation.engine: generate`) gives for the same rows: prompts of different lengths (padding), images of
1 and 5 tiles, per-row token limits, rows stopping at different steps (the stop token is one the model emits
at varied points), and fewer slots than rows (rows join as others finish, and the last ones move to a
smaller cache).
"""

import copy

import pytest
import torch

from internvl_batch.config import BatchingConfig, GenerationConfig, ModelConfig
from internvl_batch.generation.batching import BatchLimits
from internvl_batch.generation.engine import EngineRow, bucket_slots, plan_run
from internvl_batch.generation.predictor import GenerationRequest, Predictor
from internvl_batch.generation.sampling import Chooser
from internvl_batch.generation.slots import DecodeState, SlotCache
from internvl_batch.imaging import ImagePreprocessor
from tests.host_syncs import HostSyncs
from tests.media import encode, make_photo

QUESTIONS = ("Describe.", "What is in the picture, and what colour is it?", "Please describe the image in detail.")


def _predictor(checkpoint, engine: str, rows: int = 16) -> Predictor:
    return Predictor(
        ModelConfig(path=str(checkpoint), dtype="float32"),
        GenerationConfig(max_new_tokens=20, engine=engine),
        BatchingConfig(max_batch_rows=rows, max_padding_fraction=1.0),
    )


def _requests(prompts) -> list[GenerationRequest]:
    pre = ImagePreprocessor()
    images = [pre(encode(make_photo(*size, seed=i), "PNG")) for i, size in enumerate([(448, 448), (634, 634)])]
    rows = []
    for i in range(18):
        image, question = images[i % 2], QUESTIONS[i % 3]
        limit = (3, 20, 11, None)[i % 4]  # None: generation.max_new_tokens
        rows.append(GenerationRequest(prompts.build(question, [image.num_tiles]).input_ids, image.tiles, limit))
    return rows


def _with_stop(predictor: Predictor, stop: int) -> Predictor:
    predictor.prompts = copy.copy(predictor.prompts)
    predictor.prompts.stop_token_id = stop
    predictor._start_engine()  # the engine reads the stop token when it starts
    return predictor


def _varied_stop(outputs: list[list[int]]) -> int:
    """A token that the rows first emit at the most different steps (so that rows stop at different steps)."""
    firsts: dict[int, set] = {}
    for tokens in outputs:
        for step, token in enumerate(tokens):
            if token not in {t for t in tokens[:step]}:
                firsts.setdefault(token, set()).add(step)
    return max(firsts, key=lambda t: (len(firsts[t]), -t))


@pytest.mark.parametrize("llm", ["qwen2", pytest.param("internlm2", marks=pytest.mark.slow)])
def test_static_tokens_equal_generate(llm, tiny_checkpoint, request):
    checkpoint = tiny_checkpoint if llm == "qwen2" else request.getfixturevalue("tiny_internlm2_6b_checkpoint")
    today = _predictor(checkpoint, "generate")
    rows = _requests(today.prompts)
    stop = _varied_stop([r.output_ids for r in today.generate(rows)])
    expected = _with_stop(today, stop).generate(rows)
    static = _with_stop(_predictor(checkpoint, "static"), stop)
    assert static.engine is not None
    got = static.generate(rows)
    assert [r.output_ids for r in got] == [r.output_ids for r in expected]
    assert [r.finish_reason for r in got] == [r.finish_reason for r in expected]
    assert [r.response for r in got] == [r.response for r in expected]
    finishes = {r.finish_reason for r in got}
    assert finishes == {"stop", "length"}, "the rows should stop at different steps, some at their limit"
    stopped_at = {len(r.output_ids) for r in got if r.finish_reason == "stop"}
    assert len(stopped_at) >= 3, stopped_at
    assert [r.num_output_tokens for r in got] == [len(r.output_ids) for r in got]


def test_a_decode_step_never_waits_on_the_host(tiny_checkpoint):
    static = _predictor(tiny_checkpoint, "static", rows=8)
    rows = _requests(static.prompts)
    step, per_step = static.engine.decode_step, []

    def counted(*args):
        with HostSyncs() as syncs:
            step(*args)
        per_step.append(syncs.total)

    static.engine.decode_step = counted
    with HostSyncs() as whole:
        static.generate(rows)
    assert per_step and set(per_step) == {0}
    # Outside the steps: each poll (one copy of the flags, one of finished rows' tokens) and prefill's reads.
    polls = len(per_step) / static.generation.poll_steps
    assert whole.total <= 2 * polls + 2 * len(rows), whole.counts
    today = _predictor(tiny_checkpoint, "generate", rows=8)
    with HostSyncs() as generate_syncs:
        today.generate(rows[:8])
    assert generate_syncs.total >= 19, "transformers' generate reads the stop flag back at every step"


def test_run_shapes_are_bucketed():
    rows = [EngineRow(i, 300 + 7 * i, 1, 64) for i in range(20)]
    shape = plan_run(rows, BatchLimits(max_rows=256, max_tokens=10**6))
    assert (shape.slots, shape.length) == (32, 512)  # 20 rows -> 32 slots; 433 + 64 tokens -> 512
    assert plan_run(rows, BatchLimits(max_rows=256, max_tokens=512 * 5)).slots == 5  # the token budget
    assert plan_run(rows[:1], BatchLimits(max_rows=256, max_tokens=10)).slots == 1  # never none
    assert [bucket_slots(n, 256) for n in (1, 8, 9, 100, 300)] == [8, 8, 16, 128, 256]


def test_chooser_follows_the_decoding_settings():
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0], [5.0, 1.0, 0.0, 0.0]])
    greedy = Chooser(GenerationConfig(), stop_token_id=0)
    assert greedy(logits, torch.tensor([0, 0])).tolist() == [1, 0]
    at_least_two = Chooser(GenerationConfig(min_new_tokens=2), stop_token_id=0)
    assert at_least_two(logits, torch.tensor([5, 1])).tolist() == [1, 1]  # row 2: no stop token before 2 tokens
    top_one = Chooser(GenerationConfig(do_sample=True, top_k=1), stop_token_id=0)
    assert top_one(logits, torch.tensor([0, 0])).tolist() == [1, 0]
    nucleus = Chooser(GenerationConfig(do_sample=True, top_p=0.5, temperature=0.5), stop_token_id=0)
    for _ in range(20):
        assert nucleus(logits, torch.tensor([0, 0])).tolist() == [1, 0]  # the top token alone holds > 50%


@pytest.mark.slow
def test_the_compiled_step_gives_the_same_tokens(tiny_checkpoint):
    eager = _predictor(tiny_checkpoint, "static", rows=8)
    rows = _requests(eager.prompts)[:6]
    expected = [r.output_ids for r in eager.generate(rows)]
    compiled = Predictor(
        ModelConfig(path=str(tiny_checkpoint), dtype="float32"),
        GenerationConfig(max_new_tokens=20, engine="static", compile=True),
        BatchingConfig(max_batch_rows=8, max_padding_fraction=1.0),
    )
    assert compiled.engine.decode_step is not compiled.engine.slot_model.decode_step
    assert [r.output_ids for r in compiled.generate(rows)] == expected
    # One graph, no break: nothing in the step reads a value back to the host (a read would break it).
    import torch._dynamo

    engine = compiled.engine
    cache = SlotCache(engine.layer_devices, engine.kv_heads, engine.head_dim, 8, 256, engine.dtype)
    state = DecodeState(8, 20, torch.device("cpu"), pad_token_id=0)
    with torch.inference_mode():
        explanation = torch._dynamo.explain(engine.slot_model.decode_step)(state, cache, torch.arange(256))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


def test_a_decode_step_the_compiler_cannot_build_runs_uncompiled(tiny_checkpoint, caplog):
    static = _predictor(tiny_checkpoint, "static", rows=8)
    rows = _requests(static.prompts)[:4]
    expected = [r.output_ids for r in static.generate(rows)]

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no compiler for this device")

    engine = static.engine
    engine.decode_step = torch.compile(engine.slot_model.decode_step, backend=broken_backend)
    with caplog.at_level("WARNING"):
        assert [r.output_ids for r in static.generate(rows)] == expected
    assert "compiling the decode step failed" in caplog.text
    assert engine.decode_step == engine.slot_model.decode_step


def test_a_row_whose_cache_alone_does_not_fit_is_an_error_row(tiny_checkpoint, monkeypatch):
    import internvl_batch.generation.engine as engine_module

    static = _predictor(tiny_checkpoint, "static", rows=8)
    rows = _requests(static.prompts)[:3]
    rows[1].max_new_tokens = 2000  # its cache length alone is over this replica's memory
    expected = static.generate([rows[0], rows[2]])
    real_cache = engine_module.SlotCache

    def cache_within(devices, heads, dim, slots, length, dtype):
        if slots * length > 2048:  # what the real allocation raises on a GPU that small
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a cache of {slots} x {length}")
        return real_cache(devices, heads, dim, slots, length, dtype)

    monkeypatch.setattr(engine_module, "SlotCache", cache_within)
    results = static.generate(rows)
    assert results[1].error.startswith("generate: OutOfMemoryError: a row of ")
    assert [results[0].output_ids, results[2].output_ids] == [r.output_ids for r in expected]
    assert results[0].error is None and results[2].error is None


def test_the_same_model_still_generates_through_transformers(tiny_checkpoint):
    # The engine registers its attention for the model's text layers; `generate` on the same model (padded
    # rows: 1- and 5-tile images) must still get transformers' masks with it.
    static = _predictor(tiny_checkpoint, "static", rows=8)
    rows = _requests(static.prompts)[:6]
    expected = [r.output_ids for r in static.generate(rows)]
    static.engine = None  # the predictor's other engine, on the same model
    assert [r.output_ids for r in static.generate(rows)] == expected
