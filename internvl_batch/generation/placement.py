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


# flash-attn 2 has kernels for half precision on Ampere (sm80) and newer only; elsewhere it rejects the inputs
# on the first forward pass, after the model has loaded.
FLASH_DTYPES = (torch.float16, torch.bfloat16)
FLASH_MIN_CAPABILITY = (8, 0)


def _flash_installed() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def _why_not_flash(
    device: torch.device, dtype: torch.dtype | None, capability: tuple[int, int] | None, flash_available: bool | None
) -> str | None:
    """Why flash-attn cannot run here, or None when it can. Probes only what the arguments leave open."""
    if device.type != "cuda":
        return f"flash-attn needs a CUDA device; the device is {device}"
    if not (_flash_installed() if flash_available is None else flash_available):
        return "flash-attn is not installed (pip install 'internvl-batch[gpu]')"
    if dtype is not None and dtype not in FLASH_DTYPES:
        return f"flash-attn needs float16/bfloat16; model.dtype is {str(dtype).removeprefix('torch.')}"
    if capability is None:
        capability = tuple(torch.cuda.get_device_capability(device))
    if tuple(capability) < FLASH_MIN_CAPABILITY:
        return f"flash-attn needs compute capability 8.0 or newer; {device} has {capability[0]}.{capability[1]}"
    return None


def resolve_attention(
    name: str,
    device: torch.device,
    dtype: torch.dtype | None = None,
    *,
    capability: tuple[int, int] | None = None,
    flash_available: bool | None = None,
) -> str:
    """The attention kernel for `model.attn_implementation` on `device` with the model's `dtype`.

    `auto` is flash_attention_2 where flash-attn can run (a CUDA device of compute capability >= 8.0, dtype
    float16/bfloat16 or None = not checked, flash_attn importable), else sdpa, with one warning saying why (none
    on the CPU, where sdpa is the only choice). An explicit flash_attention_2 that cannot run raises
    ModelLoadError before the model loads. `capability` (default: the device's) and `flash_available` (default:
    whether flash_attn imports) let tests decide without a GPU. sdpa and eager are returned as given."""
    if name not in ("auto", "flash_attention_2"):
        return name
    reason = _why_not_flash(device, dtype, capability, flash_available)
    if reason is None:
        return "flash_attention_2"
    if name == "flash_attention_2":
        raise ModelLoadError(f"model.attn_implementation=flash_attention_2 but {reason}; use sdpa (or auto)")
    if device.type == "cuda":
        log.warning("%s: using sdpa attention", reason)
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
