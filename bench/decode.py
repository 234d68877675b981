"""Decode-step cost of the two engines on a CPU stand-in for a GPU replica (no GPU needed).

    .venv/bin/python bench/decode.py --arch 4b --rows 32 --new-tokens 64
    .venv/bin/python bench/decode.py --arch 78b --rows 32 --new-tokens 32 --no-compile

The stand-in is the real InternVL 2.5 architecture of `--arch` (its text model's depth: 36 layers for 4B,
80 for 78B; its attention layout: grouped KV heads, rotary embeddings) at a tiny width with random weights,
so a decode step costs what the host spends on it (Python, dispatch, one call per operation), as a GPU step
does while it is launch-bound. Rows are text-only prompts of 48-192 tokens (a padded batch) and stop early:
the stop token is the token the random model first emits at the most varied points (chosen once, shown),
so rows end at different steps, as captions do. The same rows go through, in one process, with one warm-up
run and the median of 3 timed runs each:

- `generate`: transformers' `generate` (today's path), one micro-batch of all rows;
- `static`: the static engine (slots, no host synchronisation per step), eager;
- `static+compile`: the same with the decode step compiled by torch.compile (inductor, CPU).

Per engine: wall time of the whole batch; per decode step (whole-batch time minus prefill-only time, over
the decode steps run); operator calls per decode step (the profiler's leaf `aten::` calls plus compiled
kernels, same subtraction); host synchronisations per decode step (`tests/host_syncs.py`); greedy tokens
compared with `generate`'s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARCHS = {"4b": "OpenGVLab/InternVL2_5-4B", "8b": "OpenGVLab/InternVL2_5-8B", "78b": "OpenGVLab/InternVL2_5-78B"}


def stand_in(arch: str, width: int, vocab: int):
    """The architecture at full depth, `width` hidden units, random weights, float32, sdpa."""
    import torch
    from transformers import InternVLForConditionalGeneration

    from internvl_batch.model.convert import native_config
    from internvl_batch.model.family import family_config, family_name

    raw = family_config(family_name(ARCHS[arch]))
    llm = raw["llm_config"]
    ratio = llm["num_attention_heads"] // llm["num_key_value_heads"]
    llm.update(hidden_size=width, num_attention_heads=2 * ratio, num_key_value_heads=2)
    llm.update(intermediate_size=2 * width, vocab_size=vocab, bos_token_id=1, eos_token_id=2)
    raw["vision_config"].update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    config = native_config(raw, image_token_id=vocab - 1)
    model = InternVLForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval()


def make_predictor(model, engine: str, compile_step: bool, stop: int, new_tokens: int):
    from internvl_batch.config import BatchingConfig, GenerationConfig
    from internvl_batch.generation.predictor import Predictor

    prompts = SimpleNamespace(image_context_id=-1, stop_token_id=stop, pad_token_id=0, decode=lambda ids: "")
    generation = GenerationConfig(max_new_tokens=new_tokens, engine=engine, compile=compile_step)
    batching = BatchingConfig(max_batch_rows=1024, max_batch_tokens=10**9, max_padding_fraction=1.0)
    return Predictor.from_parts(model, prompts, "cpu", model.dtype, generation, batching)


def requests_for(rows: int, vocab: int, new_tokens: int, seed: int = 0):
    import numpy as np

    from internvl_batch.generation.predictor import GenerationRequest

    rng = np.random.default_rng(seed)
    lengths = rng.integers(48, 193, size=rows)
    return [GenerationRequest(rng.integers(3, vocab - 2, size=n), None, new_tokens) for n in lengths]


def choose_stop(model, requests, new_tokens: int) -> tuple[int, list[int]]:
    """The token whose first appearance in the rows' greedy outputs is spread the most across the batch."""
    predictor = make_predictor(model, "static", False, stop=-5, new_tokens=new_tokens)
    outputs = [r.output_ids for r in predictor.generate(requests)]
    firsts: dict[int, list[int]] = {}
    for tokens in outputs:
        seen = set()
        for position, token in enumerate(tokens):
            if token not in seen:
                seen.add(token)
                firsts.setdefault(token, []).append(position)

    # Most rows stopping in the first 60% of the budget, at as many different steps as possible.
    def score(token):
        early = [p for p in firsts[token] if p < 0.6 * new_tokens]
        return (len(early) + 0.5 * len(set(early)), -token)

    stop = max(firsts, key=score)
    lengths = [tokens.index(stop) + 1 if stop in tokens else new_tokens for tokens in outputs]
    return stop, lengths


def measure(predictor, requests, first_only) -> dict:
    """Median whole-batch and prefill-only times, decode steps, operator calls and host syncs."""
    import torch

    from tests.host_syncs import HostSyncs

    steps = Counter()

    def count_steps(*_):
        steps["n"] += 1

    text = predictor.model.model.language_model
    hook = text.register_forward_pre_hook(count_steps)  # generate: one text-model call per step
    try:
        predictor.generate(requests)  # warm-up (compiles, when compiling)
        predictor.generate(first_only)
        timings = {}
        for name, batch in (("full", requests), ("prefill", first_only)):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                outputs = predictor.generate(batch)
                times.append(time.perf_counter() - start)
            timings[name] = statistics.median(times)
            if name == "full":
                tokens = [r.output_ids for r in outputs]
        counts = {}
        for name, batch in (("full", requests), ("prefill", first_only)):
            engine_steps = predictor.engine.steps_run if predictor.engine else 0
            steps.clear()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                predictor.generate(batch)
            decode = predictor.engine.steps_run - engine_steps if predictor.engine else steps["n"]
            counts[name] = dict(ops=leaf_ops(prof), steps=decode)
        # Last: under the counting modes torch.compile stops using its compiled step (the syncs are the same
        # in the compiled and the eager step; a compiled graph cannot hold one without breaking).
        for name, batch in (("full", requests), ("prefill", first_only)):
            with HostSyncs() as syncs:
                predictor.generate(batch)
            counts[name]["syncs"] = syncs.total
    finally:
        hook.remove()
    if predictor.engine is None:  # generate: the prefill-only run is one call, no decode step
        counts["full"]["steps"] -= 1
        counts["prefill"]["steps"] = 0
    decode_steps = counts["full"]["steps"] - counts["prefill"]["steps"]
    return dict(
        batch_s=round(timings["full"], 4),
        decode_steps=decode_steps,
        ms_per_step=round(1000 * (timings["full"] - timings["prefill"]) / decode_steps, 3),
        ops_per_step=round((counts["full"]["ops"] - counts["prefill"]["ops"]) / decode_steps, 1),
        syncs_per_step=round((counts["full"]["syncs"] - counts["prefill"]["syncs"]) / decode_steps, 2),
        syncs_whole_batch=counts["full"]["syncs"],
        tokens=tokens,
    )


def leaf_ops(prof) -> int:
    """Operator calls that do work: `aten::` calls with no `aten::` call inside, and compiled kernels."""
    total = 0
    for event in prof.events():
        if event.name.startswith("aten::"):
            total += not any(c.name.startswith("aten::") for c in event.cpu_children)
        elif event.name.startswith(("cpp_fused", "triton_")):
            total += 1
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="4b")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--width", type=int, default=64, help="hidden size of the stand-in")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled static engine")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # the host's single dispatching thread is what a launch-bound GPU step waits on
    # Compiled kernels show up in the profiler by name (to count them as operator calls).
    torch._inductor.config.cpp.enable_kernel_profile = True
    model = stand_in(args.arch, args.width, args.vocab)
    requests = requests_for(args.rows, args.vocab, args.new_tokens)
    stop, lengths = choose_stop(model, requests, args.new_tokens)
    first_only = requests_for(args.rows, args.vocab, 1)
    layers = model.config.text_config.num_hidden_layers
    report = dict(
        arch=f"{ARCHS[args.arch]} text model at full depth ({layers} layers), width {args.width}, random weights",
        rows=args.rows,
        new_tokens=args.new_tokens,
        stop_token=stop,
        generated_lengths=dict(min=min(lengths), median=statistics.median(lengths), max=max(lengths)),
        rows_stopped_early=sum(n < args.new_tokens for n in lengths),
        torch=torch.__version__,
        engines={},
    )
    engines = [("generate", False), ("static", False)] + ([] if args.no_compile else [("static+compile", True)])
    for name, compile_step in engines:
        predictor = make_predictor(model, name.split("+")[0], compile_step, stop, args.new_tokens)
        report["engines"][name] = measure(predictor, requests, first_only)
        print(name, {k: v for k, v in report["engines"][name].items() if k != "tokens"}, file=sys.stderr)
    reference = report["engines"]["generate"].pop("tokens")
    for name, figures in report["engines"].items():
        if name != "generate":
            figures["tokens_equal_generate"] = figures.pop("tokens") == reference
            figures["step_speedup"] = round(report["engines"]["generate"]["ms_per_step"] / figures["ms_per_step"], 2)
            figures["batch_speedup"] = round(report["engines"]["generate"]["batch_s"] / figures["batch_s"], 2)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
