"""The ceiling of the GPU that `bench/gpu.py` runs on, and the work it holds its measurements against.

`ceiling_for(torch.cuda.get_device_name())`: peak dense BF16 tensor-core TFLOP/s and memory bandwidth from
NVIDIA's product datasheets. Hopper and Ada datasheets print BF16 "with sparsity" (2:4 structured); the dense
figure, the one used here, is half of it. A GPU not in the table gets None: no ratio is printed for it.

`work(...)` counts model FLOPs and decode memory traffic of useful work only (no padding, nothing computed for
a row after its last token):
- vision, per tile: 2 x vision-tower parameters x 1,025 positions + attention 4 x layers x 1,025^2 x width,
  and the projector, 2 x its parameters x 256 tokens;
- prefill of a P-token prompt: 2 x decoder parameters x P + causal attention 2 x layers x P^2 x (query heads x
  head dim), and the output head once, at the last position (its logits give the first token; the other
  positions' logits are never needed);
- each further generated token at context c: 2 x (decoder parameters + output head) + attention 4 x layers x
  c x (query heads x head dim);
- decode bytes: the decoder's and output head's weights, read once per decode step of `batch` rows (every
  slot busy), and each row's KV cache (keys and values of all layers) read once per step it takes.
Bounds: prefill (vision included) >= its FLOPs / peak; decode >= max(its FLOPs / peak, its bytes / bandwidth).
Both are lower bounds: no kernel runs at either peak, and the vision tower's and the prefill's memory traffic
is left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Ceiling:
    gpu: str
    tflops: float  # dense BF16 tensor-core peak, 1e12 FLOP/s
    bandwidth: float  # memory bandwidth, GB/s (1e9 bytes/s)
    source: str


# (pattern searched in the lower-cased `torch.cuda.get_device_name()`, ceiling); the first match wins, so the
# more specific names come first ("NVIDIA H200 NVL" before "NVIDIA H200"; "NVIDIA GH200 ..." matches none).
CEILINGS: list[tuple[str, Ceiling]] = [
    # NVIDIA H200 datasheet: H200 NVL BF16 1,671 TFLOPS with sparsity, 4.8 TB/s HBM3e
    (r"\bh200 nvl\b", Ceiling("H200 NVL", 835.5, 4800, "NVIDIA H200 datasheet (NVL): BF16 1,671 sparse, 4.8 TB/s")),
    # NVIDIA H200 datasheet: H200 SXM BF16 1,979 TFLOPS with sparsity, 4.8 TB/s HBM3e
    (r"\bh200\b", Ceiling("H200 SXM", 989.5, 4800, "NVIDIA H200 datasheet (SXM): BF16 1,979 sparse, 4.8 TB/s")),
    # NVIDIA H100 datasheet: H100 NVL BF16 1,671 TFLOPS with sparsity, 3.9 TB/s HBM3
    (r"\bh100 nvl\b", Ceiling("H100 NVL", 835.5, 3900, "NVIDIA H100 datasheet (NVL): BF16 1,671 sparse, 3.9 TB/s")),
    # NVIDIA H100 datasheet: H100 PCIe BF16 1,513 TFLOPS with sparsity, 2.0 TB/s HBM2e
    (r"\bh100 pcie\b", Ceiling("H100 PCIe", 756.5, 2000, "NVIDIA H100 datasheet (PCIe): BF16 1,513 sparse, 2 TB/s")),
    # NVIDIA H100 datasheet: H100 SXM BF16 1,979 TFLOPS with sparsity, 3.35 TB/s HBM3 (reports "H100 80GB HBM3")
    (
        r"\bh100 (sxm|80gb hbm3)",
        Ceiling("H100 SXM", 989.5, 3350, "NVIDIA H100 datasheet (SXM): BF16 1,979 sparse, 3.35 TB/s"),
    ),
    # NVIDIA A100 datasheet: BF16 312 TFLOPS dense (624 with sparsity); 80GB SXM 2,039 GB/s, 40GB SXM 1,555 GB/s
    (
        r"\ba100-sxm\d?-80gb",
        Ceiling("A100 80GB SXM", 312.0, 2039, "NVIDIA A100 datasheet (80GB SXM): BF16 312, 2,039 GB/s"),
    ),
    (
        r"\ba100-sxm\d?-40gb",
        Ceiling("A100 40GB SXM", 312.0, 1555, "NVIDIA A100 datasheet (40GB SXM): BF16 312, 1,555 GB/s"),
    ),
    # NVIDIA A100 datasheet: PCIe 80GB 1,935 GB/s, PCIe 40GB 1,555 GB/s, BF16 312 TFLOPS dense
    (
        r"\ba100 80gb pcie\b",
        Ceiling("A100 80GB PCIe", 312.0, 1935, "NVIDIA A100 datasheet (80GB PCIe): BF16 312, 1,935 GB/s"),
    ),
    (
        r"\ba100-pcie-40gb\b",
        Ceiling("A100 40GB PCIe", 312.0, 1555, "NVIDIA A100 datasheet (40GB PCIe): BF16 312, 1,555 GB/s"),
    ),
    # NVIDIA L40S datasheet: BF16 362.05 TFLOPS dense (733 with sparsity), 864 GB/s GDDR6 (not HBM)
    (r"\bl40s\b", Ceiling("L40S", 362.05, 864, "NVIDIA L40S datasheet: BF16 362.05 dense, 864 GB/s GDDR6")),
]


def ceiling_for(device_name: str) -> Ceiling | None:
    name = device_name.lower()
    return next((ceiling for pattern, ceiling in CEILINGS if re.search(pattern, name)), None)


@dataclass(frozen=True)
class Shape:
    """What the accounting needs to know of a model."""

    vision: int  # vision tower parameters
    projector: int
    vision_layers: int
    vision_width: int
    positions: int  # vision positions per tile (patches + class token)
    decoder: int  # language model parameters without the input embeddings
    head: int  # output head parameters
    layers: int
    q_width: int  # query heads x head dim
    kv_token: int  # bytes of one token's keys and values in all layers
    dtype_bytes: int

    @classmethod
    def of(cls, model, dtype_bytes: int) -> Shape:
        def count(module) -> int:
            return sum(p.numel() for p in module.parameters())

        text, vision = model.config.text_config, model.config.vision_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        image, patch = (_first(vision.image_size), _first(vision.patch_size))
        return cls(
            vision=count(model.model.vision_tower),
            projector=count(model.model.multi_modal_projector),
            vision_layers=vision.num_hidden_layers,
            vision_width=vision.hidden_size,
            positions=(image // patch) ** 2 + 1,
            decoder=count(model.model.language_model) - count(model.get_input_embeddings()),
            head=count(model.get_output_embeddings()),
            layers=text.num_hidden_layers,
            q_width=text.num_attention_heads * head_dim,
            kv_token=2 * text.num_key_value_heads * head_dim * dtype_bytes * text.num_hidden_layers,
            dtype_bytes=dtype_bytes,
        )


@dataclass(frozen=True)
class Work:
    vision_flops: float
    prefill_flops: float  # the language model's prefill, the output head at the last position included
    decode_flops: float
    decode_bytes: float
    tokens: int  # generated tokens (the first one, from the prefill, included)

    def bounds(self, ceiling: Ceiling) -> dict[str, float]:
        """Lower bounds in seconds: prefill (compute), decode (compute, bandwidth), and the whole run."""
        peak, bandwidth = ceiling.tflops * 1e12, ceiling.bandwidth * 1e9
        prefill = (self.vision_flops + self.prefill_flops) / peak
        compute, memory = self.decode_flops / peak, self.decode_bytes / bandwidth
        return {
            "prefill_s": prefill,
            "decode_compute_s": compute,
            "decode_memory_s": memory,
            "total_s": prefill + max(compute, memory),
        }


def work(shape: Shape, rows: list[tuple[int, int, int]], batch: int) -> Work:
    """`rows`: (tiles, prompt tokens, generated tokens) of each row; `batch`: rows decoding at once."""
    s = shape
    per_tile = 2 * s.vision * s.positions + 4 * s.vision_layers * s.positions**2 * s.vision_width
    per_tile += 2 * s.projector * 256
    vision = prefill = decode = kv = steps = 0.0
    for tiles, prompt, generated in rows:
        vision += tiles * per_tile
        prefill += 2 * s.decoder * prompt + 2 * s.layers * prompt**2 * s.q_width + 2 * s.head
        d = max(generated - 1, 0)  # decode steps: the first token comes from the prefill
        context = d * prompt + d * (d + 1) / 2  # the context lengths of those steps, summed
        decode += 2 * d * (s.decoder + s.head) + 4 * s.layers * context * s.q_width
        kv += context * s.kv_token
        steps += d
    weights = (s.decoder + s.head) * s.dtype_bytes
    return Work(vision, prefill, decode, steps / batch * weights + kv, sum(g for *_, g in rows))


def _first(value) -> int:
    return int(value) if isinstance(value, int) else int(value[0])


def describe(w: Work, bounds: dict[str, float] | None, batch: int, rows: int) -> str:
    """The work of a measurement and, on a known GPU, its bound, as printed."""
    text = (
        f"  work: vision {w.vision_flops / 1e12:.3g} TFLOP, prefill {w.prefill_flops / 1e12:.3g} TFLOP, decode "
        f"{w.decode_flops / 1e12:.3g} TFLOP and {w.decode_bytes / 1e9:.3g} GB read at {batch} rows a step"
    )
    if bounds:
        decode = max(bounds["decode_memory_s"], bounds["decode_compute_s"])
        text += (
            f"\n  bound: prefill >= {bounds['prefill_s']:.3g} s (compute), decode >= {decode:.3g} s (bandwidth "
            f"{bounds['decode_memory_s']:.3g} s, compute {bounds['decode_compute_s']:.3g} s) -> at most "
            f"{rows / bounds['total_s']:.4g} images/s"
        )
    return text


def rates(f: dict, w: Work, bounds: dict[str, float] | None, ceiling: Ceiling | None, rows: int) -> None:
    """Adds to a measurement `f` (median seconds `s`, generated `tokens`): images/s, tokens/s, model TFLOP/s,
    MFU, and the share of the bound it reaches (bound seconds / measured seconds)."""
    f["images_per_s"], f["tokens_per_s"] = rows / f["s"], f["tokens"] / f["s"]
    f["model_tflops"] = (w.vision_flops + w.prefill_flops + w.decode_flops) / f["s"] / 1e12
    f["mfu"] = f["model_tflops"] / ceiling.tflops if ceiling else None
    f["of_bound"] = bounds["total_s"] / f["s"] if bounds else None
