"""GPU stage throughput: our predictor against the model card's recipe, on the real architectures.

    python bench/gpu.py                                   # on a GPU: InternVL2.5-1B and 4B, bf16, < 8 minutes
    python bench/gpu.py --tiny --device cpu --rows 2      # the same code at tiny sizes (what the test runs)

The real InternVL2.5-1B and -4B architectures (known offline, `internvl_batch/model/family.py`) with random
weights (no download), bf16. For images of 1, 7 and 13 tiles, a ~30-token question and exactly 64 new tokens
(`min_new_tokens`, so random weights cannot stop early), images per second:
- ours: `Predictor.generate` on prepared rows (uint8 tiles made by the CPU stage, which runs in parallel in
  the job), normalisation on the GPU, vision tower in chunks, length-bucketed micro-batches;
- the model card's recipe: per batch, float32 CPU preprocessing of each image (PIL tiling, then ToTensor and
  Normalize per tile) and one `batch_chat`-style call: left-padded prompts, `generate(pixel_values=...)` over
  all the batch's tiles at once. Reported with and without its CPU preprocessing.
And the fraction of the hardware ceiling: estimated FLOPs per image (2 x parameters x tokens for the linear
layers plus attention) x images/s / the card's bf16 dense peak (`--peak-tflops`, 989 for H100/H200 SXM).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from reference_recipe import reference_recipe

QUESTION_TOKENS = 30
TILE_SIZES = {1: (448, 448), 7: (640, 427), 13: (800, 600)}


class BenchPrompts:
    """Token ids without a tokenizer: the checkpoint family's special token ids, random text tokens."""

    def __init__(self, vocab_size: int, image_context_id: int, stop_token_id: int, pad_token_id: int) -> None:
        self.vocab_size, self.image_context_id = vocab_size, image_context_id
        self.stop_token_id, self.pad_token_id = stop_token_id, pad_token_id

    def ids(self, tiles: int, rng: np.random.Generator) -> np.ndarray:
        text = rng.integers(100, min(self.vocab_size, 150000), QUESTION_TOKENS + 20)  # template + question
        return np.concatenate([text[:20], [self.image_context_id] * (256 * tiles), text[20:]]).astype(np.int64)

    def decode(self, ids) -> str:
        return ""


def build_model(name: str, tiny: bool, device: str, dtype: torch.dtype):
    from transformers import InternVLForConditionalGeneration

    from internvl_batch.model.convert import native_config
    from internvl_batch.model.family import family_config

    raw = family_config(name)
    if tiny:  # the same code path at a size a CPU runs in seconds
        raw["vision_config"].update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        raw["llm_config"].update(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            vocab_size=151674,
        )
    image_context_id = 151667 if raw["llm_config"]["vocab_size"] > 100000 else 92546
    config = native_config(raw, image_context_id)
    attn = "sdpa"
    if device.startswith("cuda"):
        try:
            import flash_attn  # noqa: F401

            attn = "flash_attention_2"
        except ImportError:
            pass
    with torch.device("meta"):
        model = InternVLForConditionalGeneration._from_config(config, attn_implementation=attn, dtype=dtype)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02, generator=generator) if param.dim() > 1 else param.fill_(1.0)
        rotary = model.model.language_model.rotary_emb
        with torch.device(device):
            model.model.language_model.rotary_emb = type(rotary)(rotary.config)
    stop = 151645 if image_context_id == 151667 else 92542
    pad = 151643 if image_context_id == 151667 else 2
    return model.eval(), BenchPrompts(raw["llm_config"]["vocab_size"], image_context_id, stop, pad), attn


def model_card_batch(
    model, prompts, encoded: list[bytes], ids: list[np.ndarray], device, dtype, new_tokens: int, include_cpu: bool
):
    t0 = time.perf_counter()
    pixel_values = torch.cat([reference_recipe(d) for d in encoded]).to(device, dtype)
    cpu_s = time.perf_counter() - t0
    width = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), width), prompts.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq) :] = torch.from_numpy(seq)
        mask[row, width - len(seq) :] = 1
    model.generate(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        pixel_values=pixel_values,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=prompts.stop_token_id,
        pad_token_id=prompts.pad_token_id,
    )
    return cpu_s


def flops_per_image(model, tiles: int, new_tokens: int) -> float:
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    text = model.config.text_config
    llm = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" not in n and "embed_tokens" not in n)
    v = model.config.vision_config
    vit = tiles * (2 * vision * 1025 + 4 * v.num_hidden_layers * 1025**2 * v.hidden_size)
    tokens = tiles * 256 + QUESTION_TOKENS + 20
    prefill = 2 * llm * tokens + 2 * text.num_hidden_layers * tokens**2 * text.hidden_size
    decode = new_tokens * (2 * llm + 4 * text.num_hidden_layers * (tokens + new_tokens / 2) * text.hidden_size)
    return vit + prefill + decode


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args) -> dict:
    from internvl_batch.config import BatchingConfig, GenerationConfig
    from internvl_batch.generation.predictor import GenerationRequest, Predictor
    from internvl_batch.imaging import ImagePreprocessor
    from tests.media import encode, make_photo

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    results = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu", "models": {}}
    rng = np.random.default_rng(0)
    for name in args.models:
        model, prompts, attn = build_model(name, args.tiny, args.device, dtype)
        generation = GenerationConfig(max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens)
        batching = BatchingConfig(
            max_batch_rows=args.rows,
            max_batch_tokens=10**9,
            max_batch_tiles=args.rows * 13,
            vision_chunk_tiles=args.vision_chunk,
        )
        predictor = Predictor.from_parts(model, prompts, args.device, dtype, generation, batching)
        per_model = {"attention": attn}
        for tiles in args.tiles:
            encoded = [encode(make_photo(*TILE_SIZES[tiles], seed=i), "JPEG", quality=90) for i in range(args.rows)]
            prepared = [ImagePreprocessor()(d) for d in encoded]
            assert all(p.num_tiles == tiles for p in prepared)
            ids = [prompts.ids(tiles, rng) for _ in range(args.rows)]
            requests = [GenerationRequest(i, p.tiles) for i, p in zip(ids, prepared)]
            predictor.generate(requests[: max(1, args.rows // 4)])  # warm-up (kernels, allocator)
            sync(args.device)
            t0 = time.perf_counter()
            predictor.generate(requests)
            sync(args.device)
            ours = time.perf_counter() - t0
            model_card_batch(model, prompts, encoded[:1], ids[:1], args.device, dtype, 2, True)  # warm-up
            sync(args.device)
            t0 = time.perf_counter()
            cpu_s = model_card_batch(model, prompts, encoded, ids, args.device, dtype, args.max_new_tokens, True)
            sync(args.device)
            card = time.perf_counter() - t0
            flops = flops_per_image(model, tiles, args.max_new_tokens)
            ceiling = args.peak_tflops * 1e12 / flops
            per_model[f"{tiles}_tiles"] = {
                "ours_images_per_s": round(args.rows / ours, 2),
                "model_card_images_per_s": round(args.rows / card, 2),
                "model_card_gpu_only_images_per_s": round(args.rows / max(card - cpu_s, 1e-9), 2),
                "ours_over_model_card": round(card / ours, 2),
                "tflop_per_image": round(flops / 1e12, 2),
                "ceiling_images_per_s": round(ceiling, 1),
                "ours_fraction_of_ceiling": round(args.rows / ours / ceiling, 3),
            }
            print(name, tiles, per_model[f"{tiles}_tiles"], file=sys.stderr, flush=True)
        results["models"][name] = per_model
        del model, predictor
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["InternVL2_5-1B", "InternVL2_5-4B"])
    parser.add_argument("--tiles", nargs="+", type=int, default=[1, 7, 13])
    parser.add_argument("--rows", type=int, default=64, help="images per measurement (one batch)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--vision-chunk", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="bf16 dense peak of the card (H100/H200 SXM: 989)"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny widths (CPU smoke run of the same code)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
