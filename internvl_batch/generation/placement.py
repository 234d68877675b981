"""Where a replica runs: its device, dtype, attention kernel and (multi-GPU) per-layer device map.

A replica uses exactly the devices Ray gave it. Ray makes an actor's reserved GPUs `cuda:0..k-1` (through
CUDA_VISIBLE_DEVICES), but leaves CUDA_VISIBLE_DEVICES unset for an actor that reserved none: such an actor
sees every GPU of its node, and `cuda` would put it on GPU 0 next to replicas that did reserve it. So a
replica that reserved no GPU runs on the CPU (and the pipeline hides the GPUs from it as well).
"""

from __future__ import annotations

import logging

import torch

from internvl_batch.errors import ModelLoadError
from internvl_batch.model.device_map import split_model

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str, reserved_gpus: float | None = None, cuda_available: bool | None = None) -> torch.device:
    """The replica's device for `model.device`.

    `reserved_gpus`: the GPUs Ray reserved for this replica (None outside a pipeline: any device may be used).
    With none reserved, `auto` is the CPU and an explicit CUDA device is an error."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if reserved_gpus == 0:
        if name == "auto":
            return torch.device("cpu")
        if torch.device(name).type == "cuda":
            raise ModelLoadError(
                f"model.device={name} but this replica reserved no GPU; set resources.accelerator=gpu "
                "(or model.device=auto)"
            )
    if name == "auto":
        return torch.device("cuda" if cuda_available else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def resolve_attention(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            log.warning("flash-attn is not installed; using sdpa attention (pip install 'internvl-batch[gpu]')")
    return "sdpa"


def replica_device_map(
    num_layers: int, gpus: int, device: torch.device, visible: int | None = None
) -> dict[str, str] | None:
    """The per-layer split over this actor's GPUs (Ray makes them cuda:0..k-1), or None for one device.
    `visible`: the GPUs this process sees (default: torch's count)."""
    if gpus <= 1 or device.type != "cuda":
        return None
    available = torch.cuda.device_count() if visible is None else visible
    if available < gpus:
        raise ModelLoadError(f"model.gpus_per_replica={gpus} but this actor sees {available} GPUs")
    return {name: f"cuda:{gpu}" for name, gpu in split_model(num_layers, gpus).items()}
