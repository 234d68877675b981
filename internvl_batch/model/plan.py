"""`internvl-batch plan MODEL --gpus k --gpu-mem 80`: memory per GPU of a replica, before renting GPUs.

The model's real architecture is built on the meta device (no weights, no memory) from a family name known
offline (`OpenGVLab/InternVL2_5-78B`) or a checkpoint directory's config.json; the device map assigns every
parameter to a GPU; per GPU we add up:
- weights (parameters x dtype size);
- per row: the KV cache of the layers on that GPU for `tiles x 256 + prompt + max_new_tokens` tokens, plus
  one layer's prefill activations (the MLP's gate/up projections dominate) for the same tokens;
- GPU 0 also runs the vision tower over a chunk of tiles (activations of one ViT layer), and holds the
  prefill's input embeddings of every row (about three copies during generate: the looked-up embeddings,
  the image features, and the merged `inputs_embeds` that generate keeps), with the output head.
`usable` is `gpu_mem x utilization` (CUDA context, allocator fragmentation). These are estimates, good to
choose `k` and batch sizes; measure on the real hardware before trusting a tight fit. The per-token costs are
`generation/auto_batch.py`'s, which a loaded replica uses to size its own batches from the memory it finds free
(`batching.max_batch_rows/max_batch_tokens: auto`), so the two agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from internvl_batch.errors import ModelLoadError
from internvl_batch.generation.auto_batch import llm_layer_counts, per_token_bytes, vision_workspace_bytes
from internvl_batch.model.device_map import device_of, split_model
from internvl_batch.model.family import family_config, family_name

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def meta_model_for(model: str):
    """(name, meta-device model) for a family name/Hub id or a checkpoint directory."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    # With transformers: the conversion brings torch, which `internvl-batch plan` needs only here.
    from internvl_batch.model.convert import native_config

    name = family_name(model)
    path = Path(model).expanduser()
    if path.is_dir():
        raw = json.loads((path / "config.json").read_text())
        name = path.name
    elif name is not None:
        raw = family_config(name)
    else:
        raise ModelLoadError(
            f"{model!r} is neither a checkpoint directory nor an InternVL 2.5 model (e.g. OpenGVLab/InternVL2_5-78B)"
        )
    config = native_config(raw, image_token_id=0) if raw.get("model_type") == "internvl_chat" else InternVLConfig(**raw)
    with torch.device("meta"):
        return name, InternVLForConditionalGeneration._from_config(config)


@dataclass
class GpuPlan:
    gpu: int
    llm_layers: int
    weights_gb: float
    per_row_gb: float
    workspace_gb: float
    room_gb: float  # left for KV cache and activations after weights and the vision workspace

    @property
    def max_rows(self) -> int:
        return max(0, int(self.room_gb // self.per_row_gb)) if self.per_row_gb > 0 else 10**9


@dataclass
class ReplicaPlan:
    model: str
    gpus: int
    gpu_mem_gb: float
    per_gpu: list[GpuPlan]
    tokens_per_row: int

    @property
    def weights_fit(self) -> bool:
        return all(g.room_gb > 0 for g in self.per_gpu)

    @property
    def fits(self) -> bool:
        """The weights and at least one row per batch fit on every GPU (`internvl-batch plan` exits 1 if not)."""
        return self.max_batch_rows >= 1

    @property
    def max_batch_rows(self) -> int:
        return min(g.max_rows for g in self.per_gpu) if self.weights_fit else 0


def plan_replica(
    model: str,
    gpus: int,
    gpu_mem_gb: float = 80.0,
    dtype: str = "bfloat16",
    tiles: int = 13,
    prompt_tokens: int = 64,
    max_new_tokens: int = 256,
    vision_chunk_tiles: int = 64,
    utilization: float = 0.9,
) -> ReplicaPlan:
    name, meta = meta_model_for(model)
    text, vision = meta.config.text_config, meta.config.vision_config
    layers = text.num_hidden_layers
    device_map = split_model(layers, gpus)
    size = DTYPE_BYTES[dtype]
    weights = [0] * gpus
    for pname, param in meta.named_parameters():
        weights[device_of(pname, device_map)] += param.numel() * size
    layer_counts = llm_layer_counts(device_map, list(range(gpus)))
    tokens = tiles * 256 + prompt_tokens + max_new_tokens
    per_token = per_token_bytes(text, layer_counts, size)  # the replica's `auto` batch limits use the same
    vit_workspace = vision_workspace_bytes(vision, vision_chunk_tiles, size)
    usable = gpu_mem_gb * GIB * utilization
    per_gpu = []
    for gpu in range(gpus):
        workspace = vit_workspace if gpu == 0 else 0
        per_row = tokens * per_token[gpu]
        per_gpu.append(
            GpuPlan(
                gpu,
                layer_counts[gpu],
                weights[gpu] / GIB,
                per_row / GIB,
                workspace / GIB,
                (usable - weights[gpu] - workspace) / GIB,
            )
        )
    return ReplicaPlan(name, gpus, gpu_mem_gb, per_gpu, tokens)


def render(plan: ReplicaPlan) -> str:
    lines = [f"{plan.model} on {plan.gpus} x {plan.gpu_mem_gb:g} GiB GPU(s); a row = {plan.tokens_per_row} tokens"]
    lines.append("gpu  llm layers  weights GiB  room GiB  per row GiB  rows that fit")
    for g in plan.per_gpu:
        lines.append(
            f"{g.gpu:>3}  {g.llm_layers:>10}  {g.weights_gb:>10.1f}  {g.room_gb:>7.1f}  {g.per_row_gb:>10.2f}  {g.max_rows:>13}"
        )
    total = sum(g.weights_gb for g in plan.per_gpu)
    if plan.fits:
        lines.append(f"fits: weights {total:.1f} GiB in all; largest batch that fits: {plan.max_batch_rows} rows")
    elif plan.weights_fit:
        tight = min(plan.per_gpu, key=lambda g: g.max_rows)
        lines.append(
            f"does NOT fit: the weights ({total:.1f} GiB in all) leave no room for one row of {plan.tokens_per_row} "
            f"tokens on GPU {tight.gpu} ({tight.room_gb:.1f} GiB left, {tight.per_row_gb:.2f} GiB a row); use fewer "
            "tiles or tokens per row, more GPUs per replica, or bigger GPUs"
        )
    else:
        lines.append(f"does NOT fit: weights {total:.1f} GiB in all; use more GPUs per replica or bigger GPUs")
    return "\n".join(lines)
