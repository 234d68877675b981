"""GPU stage: the predictor's engines and the model card's recipe on the same rows, against the GPU's ceiling.

    python bench/gpu.py --model OpenGVLab/InternVL2_5-4B --tiles 7 --new-tokens 16,128,1024 --json gpu.json
    python bench/gpu.py --model tiny --device cpu --rows 4 --tiles 4 --new-tokens 8    # CPU smoke run, ~20 s

Model: a family name (the real architecture built on the device with random weights, no download; `--tiny`
shrinks its widths) or a checkpoint (a directory, or `tiny`: the project's tiny one) loaded as the job does.
Rows (`--seed`): `--rows` images of 1 to `--tiles` tiles (counts the tiler makes: 1, or a grid of 2+ tiles and
its thumbnail), each with 4-64 random question tokens in a 48-token chat template: padded micro-batches.

Early stops: each row gets a caption-like length L, lognormal with median 40% of N new tokens, sigma 0.6,
clipped to 1..N (not `min_new_tokens`). Random weights never emit the stop token on their own (its
output-head row is zeroed), so `--stops` says how rows end at L; every engine gets the same requests:
- forced (default): every row has `max_new_tokens` = N, as in a job, and ends with a real stop token. Its
  prompt's last token is `base + L`; a hook on the input embeddings keeps the token each row was last fed
  and one on the output head turns `base + k` into `base + k - 1`, `base + 1` into the stop token. So each row
  emits exactly L tokens whatever engine or slot it runs in: the engine learns of a stop as with a real
  model (static: at its next poll; generate: a call runs until its longest row stops). Only ids are forced.
- limits: each row's own `max_new_tokens` = L. The static engine then knows the lengths in advance (its cache
  length, longest-first admission, polls at the limits), and the predictor makes one `generate` call per
  distinct limit, so nearly every row is a micro-batch of its own: neither is what a job sees.
Attention as the job picks it: sdpa for static; flash_attention_2 where installed (CUDA) for generate and the
recipe (the card loads with use_flash_attn=True), else sdpa. `--attention` sets one for all.

Baseline, the model card's recipe (`reference_recipe.py` and the card's `batch_chat`): per batch of B rows in
arrival order (not sorted by length), float32 CPU preprocessing of each image (PIL convert RGB, resize to the
chosen grid, row-major crops, the thumbnail, ToTensor + Normalize per tile), then one
`generate(input_ids, attention_mask, pixel_values)`: left-padded, the vision tower over all the batch's tiles
at once, greedy (the card's example samples; greedy does the same work every run), rows ending as `--stops`
says (limits: `max_new_tokens = min_new_tokens =` the batch's longest, what one call costs either way).
Its images/s include the CPU preprocessing (the card does it in line); "gpu only" leaves it out. If it runs
out of memory (all of a batch's tiles at once), it says so.

Each engine and the recipe: one warm-up run, then the median of 3 timed runs over all rows, with
torch.cuda.synchronize before and after each. Figures: images/s, generated tokens/s (each row's tokens up to
its stop), model TFLOP/s, MFU and % of the bound of the GPU present (`gpu_ceilings.py`: FLOPs and bytes of
useful work, the output head once per generated token; datasheet peaks); on CUDA, peak memory allocated next
to `plan_replica`'s estimate for B rows of the most tiles.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import traceback
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from gpu_ceilings import Shape, ceiling_for, describe, rates, work
from reference_recipe import reference_recipe

TEMPLATE = (40, 8)  # chat-template tokens before the image (system prompt, user turn) and after the question
QUESTION = (4, 64)  # question tokens, uniform
MEDIAN_SHARE, SIGMA = 0.4, 0.6  # row lengths: lognormal, median MEDIAN_SHARE x N
ENGINES = ("generate", "static", "auto")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
GIB = 1024**3


def bench_prompts(image_context_id: int, stop_token_id: int, pad_token_id: int) -> SimpleNamespace:
    """What the predictor needs of a prompt builder: the special token ids, and `decode` (the text is unread)."""
    ids = dict(image_context_id=image_context_id, stop_token_id=stop_token_id, pad_token_id=pad_token_id)
    return SimpleNamespace(**ids, decode=lambda tokens: "")


def build_model(name: str, tiny: bool, device: str, dtype: torch.dtype):
    """(model, prompts, description, what `plan_replica` can plan: a family name, a checkpoint dir or None)."""
    from internvl_batch.model.family import family_config, family_name

    if Path(name).expanduser().is_dir() or family_name(name) is None:  # a checkpoint, loaded as the job does
        from internvl_batch.config import ModelConfig
        from internvl_batch.generation.predictor import Predictor

        dtype_name = next(k for k, v in DTYPES.items() if v == dtype)
        loaded = Predictor(ModelConfig(path=name, device=device, dtype=dtype_name))
        p, model = loaded.prompts, loaded.model
        prompts = bench_prompts(p.image_context_id, p.stop_token_id, p.pad_token_id)
        what, source = "checkpoint", str(loaded.info.path)
    else:
        from transformers import InternVLForConditionalGeneration

        from internvl_batch.model.convert import native_config

        raw = family_config(family_name(name))
        if tiny:  # the same code path at a size a CPU runs in seconds
            raw["vision_config"].update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
            raw["llm_config"].update(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
            raw["vision_config"]["intermediate_size"], raw["llm_config"]["intermediate_size"] = 64, 128
        qwen = raw["llm_config"]["vocab_size"] > 100000
        prompts = bench_prompts(151667, 151645, 151643) if qwen else bench_prompts(92546, 92542, 2)
        config = native_config(raw, prompts.image_context_id)
        with torch.device("meta"):
            model = InternVLForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=dtype)
        model = model.to_empty(device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0, 0.02, generator=generator) if param.dim() > 1 else param.fill_(1.0)
            rotary = model.model.language_model.rotary_emb
            with torch.device(device):
                model.model.language_model.rotary_emb = type(rotary)(rotary.config)
        what, source = "random weights" + (", tiny widths" if tiny else ""), None if tiny else family_name(name)
    with torch.no_grad():  # no row stops on its own: its length is where it stops
        model.get_output_embeddings().weight[prompts.stop_token_id].zero_()
    return model.eval(), prompts, what, source


def make_rows(prompts, vocab: int, max_tiles: int, n: int, seed: int) -> dict:
    """Token ids, uint8 tiles (as the CPU stage makes them), JPEG bytes and tile counts of `n` rows, and a
    standard normal draw per row (its length)."""
    from internvl_batch.imaging import ImagePreprocessor
    from tests.media import encode, make_photo

    images = {}
    for count in [1] + [k + 1 for k in range(2, min(max_tiles, 13))]:  # 1, or k >= 2 tiles + the thumbnail
        k = max(count - 1, 1)
        rows = max(d for d in range(1, int(k**0.5) + 1) if k % d == 0)  # the squarest grid of k tiles
        data = encode(make_photo(448 * (k // rows), 448 * rows, seed=count), "JPEG", quality=90)
        images[count] = data, ImagePreprocessor()(data).tiles
        assert len(images[count][1]) == count, (count, len(images[count][1]))
    rng = np.random.default_rng(seed)
    low, special = min(100, vocab // 4), [prompts.image_context_id, prompts.stop_token_id, prompts.pad_token_id]
    out = {"ids": [], "tiles": [], "encoded": [], "counts": [], "z": rng.standard_normal(n), "base": low}
    for _ in range(n):
        count = int(rng.choice(list(images)))
        text = rng.integers(low, min(vocab, 150000), sum(TEMPLATE) + int(rng.integers(*QUESTION)))
        text[np.isin(text, special)] = low
        ids = [text[: TEMPLATE[0]], np.full(256 * count, prompts.image_context_id), text[TEMPLATE[0] :]]
        out["ids"].append(np.concatenate(ids).astype(np.int64))
        out["encoded"].append(images[count][0])
        out["tiles"].append(images[count][1])
        out["counts"].append(count)
    return out


class Countdown:
    """Forced early stops (`--stops forced`, see above): rows whose last fed token is `base + k` (1 <= k <= n)
    get `base + k - 1` next, or the stop token for k = 1. Device operations only, no read-back: the hooks run
    inside a compiled decode step too."""

    def __init__(self, model, prompts, base: int, n: int) -> None:
        self.model, self.prompts, self.base, self.n, self.fed = model, prompts, base, n, None

    def __enter__(self) -> None:
        self.handles = [
            self.model.get_input_embeddings().register_forward_hook(self._fed),
            self.model.get_output_embeddings().register_forward_hook(self._logits),
        ]

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _fed(self, module, args, output) -> None:
        ids = args[0]
        if ids.dim() == 2:  # [rows, prompt] left- or right-padded (a prefill), or [rows, 1] (a decode step)
            positions = torch.arange(ids.shape[1], device=ids.device)
            last = torch.where(ids != self.prompts.pad_token_id, positions, -1).amax(dim=1, keepdim=True)
            self.fed = ids.gather(1, last.clamp(min=0))[:, 0]

    def _logits(self, module, args, logits):
        remaining = self.fed - self.base  # tokens the row still emits, this one included (1..n when counting)
        target = torch.where(remaining > 1, self.fed - 1, self.prompts.stop_token_id)[:, None]
        counting = ((remaining >= 1) & (remaining <= self.n))[:, None]
        flat = logits.view(target.shape[0], -1)  # [rows, vocab]: one position a row
        flat.scatter_(1, target, torch.where(counting, torch.finfo(flat.dtype).max, flat.gather(1, target)))
        return logits


@contextmanager
def counting_generate(model):
    """Counts `model.generate` calls (the `generate` engine's micro-batches, the recipe's batches)."""
    original, calls = model.generate, [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    model.generate = counted
    try:
        yield calls
    finally:
        del model.generate


def model_card(model, prompts, ids, encoded, lengths, n: int, forced: bool, batch: int, device: str, dtype) -> float:
    """The recipe over all rows; returns its CPU seconds (preprocessing and the copy to the device)."""
    cpu = 0.0
    for start in range(0, len(ids), batch):
        t0 = time.perf_counter()
        pixel_values = torch.cat([reference_recipe(d) for d in encoded[start : start + batch]]).to(device, dtype)
        cpu += time.perf_counter() - t0
        rows = ids[start : start + batch]
        input_ids = np.full((len(rows), max(len(i) for i in rows)), prompts.pad_token_id)
        for row, seq in enumerate(rows):  # left padding, as batch_chat sets it
            input_ids[row, input_ids.shape[1] - len(seq) :] = seq
        input_ids = torch.from_numpy(input_ids).to(device)
        longest = n if forced else max(lengths[start : start + batch])
        model.generate(
            input_ids=input_ids,
            attention_mask=(input_ids != prompts.pad_token_id).long(),
            pixel_values=pixel_values,
            max_new_tokens=longest,
            min_new_tokens=0 if forced else longest,
            do_sample=False,
            eos_token_id=prompts.stop_token_id,
            pad_token_id=prompts.pad_token_id,
        )
    return cpu


def timed(fn, device: str, warmups: int, repeats: int) -> tuple[float, list]:
    """(median seconds, [(seconds, result)]) of `repeats` runs after `warmups` untimed ones."""

    sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
    for _ in range(warmups):
        fn()
    runs = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        runs.append((time.perf_counter() - start, result))
    return statistics.median(s for s, _ in runs), runs


def measure(engine: str, model, prompts, rows: dict, ids: list, lengths: list[int], n: int, batching, args) -> dict:
    """One engine (or "model card") over all rows (prompt `ids`): median seconds, tokens, generate calls, peak
    memory."""
    from internvl_batch.config import GenerationConfig
    from internvl_batch.generation.faults import is_out_of_memory
    from internvl_batch.generation.predictor import GenerationRequest, Predictor

    forced = args.stops == "forced"
    flash = args.device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None
    try:
        model.set_attn_implementation(
            args.attention or ("flash_attention_2" if flash and engine != "static" else "sdpa")
        )
    except (ImportError, ValueError) as exc:
        print(f"  ({engine}: {exc}; sdpa instead)")
        model.set_attn_implementation("sdpa")
    f = {"attention": model.config.text_config._attn_implementation}
    if engine == "model card":
        batch, dtype = batching.max_batch_rows, DTYPES[args.dtype]
        recipe = (model, prompts, ids, rows["encoded"], lengths, n, forced, batch, args.device, dtype)
        fn = lambda: model_card(*recipe)  # noqa: E731
    else:
        generation = GenerationConfig(max_new_tokens=n, engine=engine, compile=args.compile)
        predictor = Predictor.from_parts(model, prompts, args.device, DTYPES[args.dtype], generation, batching)
        f["ran_as"] = predictor.engine_kind  # the predictor falls back to generate where static cannot run
        requests = [
            GenerationRequest(input_ids=i, tiles=t, max_new_tokens=None if forced else length)
            for i, t, length in zip(ids, rows["tiles"], lengths)
        ]
        fn = lambda: predictor.generate(requests)  # noqa: E731
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        with Countdown(model, prompts, rows["base"], n) if forced else nullcontext():
            with counting_generate(model) as calls:
                f["s"], runs = timed(fn, args.device, args.warmups, args.repeats)
        f["runs_s"] = [seconds for seconds, _ in runs]
    except Exception as exc:  # noqa: BLE001 -- one engine failing (out of memory) must not hide the others
        if not is_out_of_memory(exc):
            traceback.print_exc()
        f["failed"] = "out of memory" if is_out_of_memory(exc) else f"{type(exc).__name__}: {exc}"
    if args.device.startswith("cuda"):
        f["peak_gib"] = torch.cuda.max_memory_allocated(torch.device(args.device)) / GIB
    if "failed" in f:
        return f
    f["generate_calls_per_run"] = calls[0] / (args.warmups + args.repeats)
    if engine == "model card":
        f["tokens"], f["cpu_s"] = sum(lengths), statistics.median(cpu for _, cpu in runs)
        f["gpu_only_images_per_s"] = len(lengths) / statistics.median(s - cpu for s, cpu in runs)
    else:
        results = runs[-1][1]
        f["tokens"] = sum(r.num_output_tokens for r in results)
        f["rows_off_their_length"] = sum(r.num_output_tokens != m for r, m in zip(results, lengths))
        f["error_rows"] = sum(r.error is not None for r in results)
        f["output_ids"] = [r.output_ids for r in results]
    return f


def table_line(engine: str, f: dict, rows: int, reference) -> str:
    if "failed" in f:
        return f"  {engine:<16}failed ({f['attention']} attention): {f['failed']}"
    notes = [f["attention"]]
    if f.get("ran_as", engine) != engine:
        notes.append(f"ran as {f['ran_as']}")
    if engine == "model card":
        notes.append(f"gpu only {f['gpu_only_images_per_s']:.4g} images/s")
    elif reference is not None:  # --stops limits: the greedy tokens of random weights, compared
        same = sum(a == b for a, b in zip(reference[1], f["output_ids"]))
        f[f"same_tokens_as_{reference[0]}"] = same
        notes.append(f"greedy tokens = {reference[0]}'s in {same}/{rows} rows")
    if f.get("rows_off_their_length") or f.get("error_rows"):
        notes.append(f"{f['rows_off_their_length']} rows off their length, {f['error_rows']} error rows")
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    peak = f"{f['peak_gib']:.2f}" if "peak_gib" in f else "-"
    return (
        f"  {engine:<16}{f['s']:>8.3f}{f['images_per_s']:>10.4g}{f['tokens_per_s']:>10.5g}{pct(f['of_bound']):>9}"
        f"{f['model_tflops']:>9.3g}{pct(f['mfu']):>7}{f['generate_calls_per_run']:>7.3g}{peak:>10}  {'; '.join(notes)}"
    )


def run(args) -> dict:
    from internvl_batch.config import BatchingConfig
    from internvl_batch.generation.batching import BatchLimits, padding_fraction, plan_micro_batches
    from internvl_batch.model.plan import plan_replica

    cuda, dtype = args.device.startswith("cuda"), DTYPES[args.dtype]
    model, prompts, what, source = build_model(args.model, args.tiny, args.device, dtype)
    vocab = model.config.text_config.vocab_size
    rows = make_rows(prompts, vocab, args.tiles, args.rows, args.seed)
    counts, prompt_lengths = rows["counts"], [len(i) for i in rows["ids"]]
    new_tokens = [int(n) for n in args.new_tokens.split(",")]
    gpu = torch.cuda.get_device_name(torch.device(args.device)) if cuda else "cpu"
    ceiling = ceiling_for(gpu)  # None for a GPU not in the table, and for "cpu"
    gib = torch.cuda.get_device_properties(torch.device(args.device)).total_memory / GIB if cuda else 80.0

    def plan(n: int):  # for rows of the most tiles, the longest question and n new tokens
        kwargs = dict(tiles=max(counts), prompt_tokens=sum(TEMPLATE) + QUESTION[1], max_new_tokens=n)
        return plan_replica(source, 1, gib, args.dtype, vision_chunk_tiles=args.vision_chunk, **kwargs)

    if args.batch_rows != "auto":
        batch = int(args.batch_rows)
    else:  # what fits for the longest N (up to 256, the predictor's own auto on CUDA), 32 elsewhere
        batch = min(args.rows, max(1, min(256, plan(max(new_tokens)).max_batch_rows)) if cuda and source else 32)
    batching = BatchingConfig(max_batch_rows=batch, max_batch_tokens=10**9, max_batch_tiles=batch * max(counts))
    batching.vision_chunk_tiles = args.vision_chunk
    limits = BatchLimits(batch, 10**9, batch * max(counts), batching.max_padding_fraction)
    sorted_padding = padding_fraction(prompt_lengths, plan_micro_batches(prompt_lengths, counts, 0, limits))
    arrival = [list(range(i, min(i + batch, args.rows))) for i in range(0, args.rows, batch)]
    arrival_padding = padding_fraction(prompt_lengths, arrival)
    tiles = " ".join(f"{k}:{v}" for k, v in sorted(Counter(counts).items()))
    print(f"{args.model} ({what}), {args.dtype}, on {gpu}")
    print(
        f"ceiling: {ceiling.gpu}, {ceiling.tflops:g} TFLOP/s dense bf16, {ceiling.bandwidth:g} GB/s ({ceiling.source})"
        + ("" if args.dtype == "bfloat16" else f"; this run is {args.dtype}")
        if ceiling
        else f"ceiling: {gpu!r} is not in bench/gpu_ceilings.py: no % of bound, no MFU"
    )
    print(
        f"rows: {args.rows} images (tiles:count {tiles}), prompts of {min(prompt_lengths)}-{max(prompt_lengths)} tokens;"
        f" micro-batches / slots of {batch} rows; prefill padding {sorted_padding:.1%} length-sorted (at most"
        f" {batching.max_padding_fraction:.0%} a micro-batch), {arrival_padding:.1%} in the recipe's batches\n"
        f"early stops ({args.stops}): row lengths L lognormal (median {MEDIAN_SHARE:.0%} of N, sigma {SIGMA}, 1..N); "
        + (
            "every row max_new_tokens=N, its stop token forced after L tokens (prompts end in base+L, a countdown)"
            if args.stops == "forced"
            else "every row max_new_tokens=L (static knows the lengths ahead; generate: a call per distinct L)"
        )
    )
    if args.baseline:
        print(
            "baseline 'model card': per batch of B rows in arrival order, float32 PIL preprocessing on the CPU, one"
            " generate(pixel_values=all its tiles) running as long as its longest row"
        )
    print(f"timing: {args.warmups} warm-up, median of {args.repeats} runs; 'calls': generate calls a run")
    result = dict(vars(args), weights=what, device_name=gpu, ceiling=ceiling and vars(ceiling), batch_rows=batch)
    result.update(tile_counts=dict(Counter(counts)), prompt_tokens=prompt_lengths, runs={})
    result["padding"] = {"length_sorted": sorted_padding, "arrival_order": arrival_padding}
    shape = Shape.of(model, dtype.itemsize)
    special = [prompts.image_context_id, prompts.stop_token_id, prompts.pad_token_id]
    if args.stops == "forced" and any(
        rows["base"] < t <= rows["base"] + max(new_tokens) for t in special + [vocab - 1]
    ):
        raise SystemExit(f"--stops forced needs token ids {rows['base']}..{rows['base'] + max(new_tokens)} free")
    for n in new_tokens:
        lengths = np.clip(np.rint(n * MEDIAN_SHARE * np.exp(SIGMA * rows["z"])), 1, n).astype(int).tolist()
        ids = [np.append(i[:-1], rows["base"] + m) for i, m in zip(rows["ids"], lengths)]  # forced: the countdown
        ids = ids if args.stops == "forced" else rows["ids"]
        w = work(shape, list(zip(counts, prompt_lengths, lengths)), batch)
        bounds = w.bounds(ceiling) if ceiling else None
        print(f"\nN = {n}: rows generate {sum(lengths)} tokens (median {np.median(lengths):g}, longest {max(lengths)})")
        print(describe(w, bounds, batch, args.rows))
        run = result["runs"][str(n)] = {"row_lengths": lengths, "work": vars(w), "bounds": bounds, "engines": {}}
        if source is not None:
            g = plan(n).per_gpu[0]
            run["plan_gib"] = g.weights_gb + g.workspace_gb + batch * g.per_row_gb
            print(
                f"  plan_replica: {run['plan_gib']:.2f} GiB for {batch} rows of {max(counts)} tiles (weights "
                f"{g.weights_gb:.2f}, vision {g.workspace_gb:.2f}, {g.per_row_gb:.3f} a row), to hold against peak GiB"
            )
        print(
            f"  {'engine':<16}{'s':>8}{'images/s':>10}{'tokens/s':>10}{'% bound':>9}{'TFLOP/s':>9}{'MFU %':>7}"
            f"{'calls':>7}{'peak GiB':>10}  notes"
        )
        reference = None
        for engine in args.engines + (["model card"] if args.baseline else []):
            f = run["engines"][engine] = measure(engine, model, prompts, rows, ids, lengths, n, batching, args)
            if "failed" not in f:
                rates(f, w, bounds, ceiling, args.rows)
            print(table_line(engine, f, args.rows, reference), flush=True)
            if reference is None and "output_ids" in f and args.stops == "limits":
                reference = engine, f["output_ids"]
        for f in run["engines"].values():
            f.pop("output_ids", None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="OpenGVLab/InternVL2_5-4B", help="family name, checkpoint dir, or tiny")
    parser.add_argument("--tiny", action="store_true", help="a family model at tiny widths (CPU smoke runs)")
    parser.add_argument("--tiles", type=int, default=7, help="most tiles of an image (rows draw 1..this)")
    parser.add_argument("--new-tokens", default="16,128,1024", help="N, comma-separated: one measurement each")
    parser.add_argument("--rows", type=int, default=64, help="images per measurement")
    parser.add_argument("--batch-rows", default="auto", help="micro-batch rows / slots; auto: plan_replica (CUDA), 32")
    parser.add_argument("--engines", default="generate,static", help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--stops", choices=["forced", "limits"], default="forced", help="how rows end early (above)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True, help="the card's recipe")
    parser.add_argument(
        "--dtype", choices=["auto", *DTYPES], default="auto", help="auto: bfloat16 on CUDA, else float32"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--attention", choices=["sdpa", "flash_attention_2", "eager"], help="default: as a job picks")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="generation.compile")
    parser.add_argument("--vision-chunk", type=int, default=64, help="batching.vision_chunk_tiles")
    parser.add_argument("--warmups", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    args.engines = args.engines.split(",")
    if unknown := set(args.engines) - set(ENGINES):
        parser.error(f"unknown engines {sorted(unknown)}; choose from {', '.join(ENGINES)}")
    if args.dtype == "auto":
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    args.compile = {"auto": None, "on": True, "off": False}[args.compile]
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
