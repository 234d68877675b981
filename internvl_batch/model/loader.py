"""Load a checkpoint (either layout) into transformers' native InternVL classes (its tokenizer:
`model/tokenizer.py`, which the CPU stage uses without importing torch).

Never runs code from a checkpoint: no `trust_remote_code`, ever. Missing or unexpected weights are an error,
never silently random-initialised.

Original-layout checkpoints are converted while loading: the model is built on the meta device (no memory,
no random init), each safetensors tensor is read, renamed/split (`convert.py`), cast and placed on its
device, and assigned. Peak host memory is one tensor, not the model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from internvl_batch.errors import ModelLoadError
from internvl_batch.model.checkpoint import CheckpointInfo, refuse_pickled_weights
from internvl_batch.model.convert import WeightConverter, native_config
from internvl_batch.model.device_map import EMBEDDINGS_MODULE, device_of

log = logging.getLogger(__name__)


def safetensors_files(path: Path) -> list[Path]:
    """The weight shards of a checkpoint, from its index when it has one."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"unreadable {index}: {exc}") from None
        files = [path / name for name in sorted(set(weight_map.values()))]
    else:
        files = [path / "model.safetensors"]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        refuse_pickled_weights(path)
        raise ModelLoadError(f"weight files missing in {path}: {', '.join(absent)}")
    return files


def load_model(
    info: CheckpointInfo,
    dtype: torch.dtype,
    device: torch.device | str,
    attn_implementation: str = "sdpa",
    image_token_id: int | None = None,
    device_map: dict[str, str] | None = None,
):
    """An eval-mode `InternVLForConditionalGeneration` with every weight from the checkpoint.

    With `device_map` (module name -> device, `device_map.split_model`), each weight is placed on its own
    GPU and accelerate's hooks move activations between GPUs; `device` is then where inputs go (GPU 0)."""
    from safetensors import safe_open
    from transformers import InternVLForConditionalGeneration

    device = torch.device(device)
    if info.layout == "hf":
        try:
            # transformers reads native checkpoints itself (it knows their legacy key names). With a device map
            # it reads each weight straight onto its device: the model never sits whole in host memory.
            model, loading = InternVLForConditionalGeneration.from_pretrained(
                str(info.path),
                dtype=dtype,
                attn_implementation=attn_implementation,
                trust_remote_code=False,
                use_safetensors=True,  # never a pytorch_model*.bin pickle (read_checkpoint_info refuses those)
                output_loading_info=True,
                device_map=device_map or {"": str(device)},
            )
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot load {info.name}: {type(exc).__name__}: {exc}") from None
        problems = {
            k: v for k, v in loading.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")
        }
        if problems:
            raise ModelLoadError(f"{info.name}: checkpoint does not match the model: {problems}")
        if device_map:  # transformers dispatched without a main device: dispatch again with ours
            from accelerate.hooks import remove_hook_from_submodules

            remove_hook_from_submodules(model)
            _dispatch(model, device_map)
        return model.eval()

    if image_token_id is None:
        raise ValueError("image_token_id is needed to convert an original-layout checkpoint")
    model = _meta_model(info, image_token_id, dtype, attn_implementation)
    verify_weights(info, image_token_id, model)
    state = {}
    convert = WeightConverter(info.raw_config)
    for file in safetensors_files(info.path):
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for key in f.keys():
                    for name, tensor in convert(key, f.get_tensor(key)):
                        target = device_of(name, device_map) if device_map else device
                        state[name] = tensor.to(device=target, dtype=dtype)
        except Exception as exc:  # noqa: BLE001 - corrupt shard, I/O error, ...
            raise ModelLoadError(f"cannot read weights from {file}: {type(exc).__name__}: {exc}") from None
    model.load_state_dict(state, strict=True, assign=True)
    _rebuild_meta_buffers(model, device)
    if device_map:
        _dispatch(model, device_map)
    return model.eval()


def _dispatch(model, device_map: dict[str, str]) -> None:
    # Weights already sit on their devices; accelerate's hooks move each module's inputs to its device.
    try:
        from accelerate import dispatch_model
    except ImportError:
        raise ModelLoadError("multi-GPU replicas need accelerate: pip install accelerate") from None
    dispatch_model(model, **dispatch_arguments(device_map))


def dispatch_arguments(device_map: dict[str, str]) -> dict:
    """accelerate's `dispatch_model` arguments for a replica's device map. The main device (where the
    model's inputs and outputs go) is the GPU of the embeddings and the vision tower: without one, accelerate
    takes the first of a *set* of devices, which differs between processes, and would carry every forward's
    inputs (the prefill's embeddings included) to that GPU and back."""
    return {"device_map": device_map, "main_device": device_map[EMBEDDINGS_MODULE]}


def _meta_model(
    info: CheckpointInfo, image_token_id: int, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"
):
    """The native model built on the meta device: every parameter's name and shape, no memory."""
    from transformers import InternVLForConditionalGeneration

    config = native_config(info.raw_config, image_token_id)
    with torch.device("meta"):
        return InternVLForConditionalGeneration._from_config(
            config, attn_implementation=attn_implementation, dtype=dtype
        )


def verify_weights(info: CheckpointInfo, image_token_id: int, model=None) -> None:
    """Check, from the safetensors headers alone, that the checkpoint has exactly the weights the model needs
    (names and shapes after conversion). Cheap enough for the driver to run before any work starts."""
    from safetensors import safe_open

    model = model if model is not None else _meta_model(info, image_token_id)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    convert = WeightConverter(info.raw_config)
    found: set[str] = set()
    unexpected: list[str] = []
    for file in safetensors_files(info.path):
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
        except Exception as exc:  # noqa: BLE001 - corrupt header, I/O error, ...
            raise ModelLoadError(f"cannot read weights from {file}: {type(exc).__name__}: {exc}") from None
        for key, shape in shapes.items():
            try:
                converted = list(convert(key, torch.empty(shape, device="meta")))
            except KeyError:
                unexpected.append(key)
                continue
            for name, tensor in converted:
                if name not in expected:
                    unexpected.append(key)
                elif tuple(tensor.shape) != expected[name]:
                    raise ModelLoadError(
                        f"{info.name}: weight {key} has shape {shape}, the config implies {expected[name]} for {name}"
                    )
                else:
                    found.add(name)
    if unexpected:
        raise ModelLoadError(
            f"{info.name}: {len(unexpected)} unexpected weights in the checkpoint, e.g. {unexpected[:5]}"
        )
    missing = sorted(set(expected) - found)
    if missing:
        raise ModelLoadError(f"{info.name}: {len(missing)} weights missing from the checkpoint, e.g. {missing[:5]}")


def _rebuild_meta_buffers(model: torch.nn.Module, device: torch.device) -> None:
    # Non-persistent buffers (rotary inverse frequencies) are not in checkpoints and were created on the meta
    # device; rotary modules rebuild them from their config. Anything else left on meta is a bug: fail loudly.
    for name, module in list(model.named_modules()):
        if not any(b.is_meta for b in module.buffers(recurse=False)):
            continue
        if type(module).__name__.endswith("RotaryEmbedding") and hasattr(module, "config"):
            with torch.device(device):
                rebuilt = type(module)(module.config)
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, rebuilt)
        else:
            raise ModelLoadError(f"buffer of {name} ({type(module).__name__}) was not initialised")
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise ModelLoadError(f"parameters left uninitialised: {leftover[:5]}")
