"""Multi-GPU replicas: the model card's per-layer split, in transformers' native module names.

For a replica on `k` GPUs, GPU 0 counts as half a GPU because it also holds the vision tower:
`per_gpu = ceil(L / (k - 0.5))`, GPU 0 gets `ceil(per_gpu / 2)` LLM layers and the others `per_gpu` each,
in order. Then the vision tower, the projector, the token embeddings, the final norm, the output head and the
**last** LLM layer go to GPU 0 (the model card's fix for "tensors on different devices": the last layer's
output meets the norm and head on the same GPU as the embeddings).
"""

from __future__ import annotations

import math

EMBEDDINGS_MODULE = "model.language_model.embed_tokens"  # where a replica's inputs and outputs live (GPU 0)
GPU0_MODULES = (
    "model.vision_tower",
    "model.multi_modal_projector",
    EMBEDDINGS_MODULE,
    "model.language_model.norm",
    "model.language_model.rotary_emb",
    "lm_head",
)


def layers_per_gpu(num_layers: int, gpus: int) -> list[int]:
    """The model card's list: how many LLM layers each GPU takes, before the last layer moves to GPU 0."""
    if gpus < 1:
        raise ValueError(f"need at least one GPU, got {gpus}")
    per_gpu = math.ceil(num_layers / (gpus - 0.5))
    counts = [per_gpu] * gpus
    counts[0] = math.ceil(per_gpu * 0.5)
    return counts


def split_model(num_layers: int, gpus: int) -> dict[str, int]:
    """Module name -> GPU index for every module that holds parameters (native InternVL names)."""
    device_map: dict[str, int] = {}
    layer = 0
    for gpu, count in enumerate(layers_per_gpu(num_layers, gpus)):
        for _ in range(count):
            if layer < num_layers:
                device_map[f"model.language_model.layers.{layer}"] = gpu
                layer += 1
    for name in GPU0_MODULES:
        device_map[name] = 0
    device_map[f"model.language_model.layers.{num_layers - 1}"] = 0
    return device_map


def device_of(name: str, device_map: dict[str, int]) -> int:
    """The GPU of a parameter or buffer: its longest module prefix in the map."""
    best = None
    for module in device_map:
        if (name == module or name.startswith(module + ".")) and (best is None or len(module) > len(best)):
            best = module
    if best is None:
        raise KeyError(f"{name} is not covered by the device map")
    return device_map[best]


def covering_entries(name: str, device_map: dict[str, int]) -> list[str]:
    """Every map entry that covers `name` (exactly one for a well-formed map)."""
    return [m for m in device_map if name == m or name.startswith(m + ".")]
