"""`batching.max_batch_rows/max_batch_tokens: auto`: what fits the replica's GPU memory, measured once loaded.

The memory a generating row costs grows with its tokens (`tiles x 256 + prompt + max_new_tokens`); per token
and per GPU of a replica (the same formula as `internvl-batch plan`, which uses these functions too):
- the KV cache of the LLM layers on that GPU (keys and values: 2 x kv heads x head dim);
- one layer's prefill activations (the MLP's gate/up projections dominate: 2 x intermediate + 4 x hidden);
- on the replica's main GPU (GPU 0: the embeddings, the output head, the inputs of every row), the prefill's
  input embeddings: about three copies (the looked-up embeddings, the image features, the merged
  `inputs_embeds`).
The vision tower runs `batching.vision_chunk_tiles` tiles at a time on its GPU (GPU 0): one ViT layer's
activations for that many tiles are set aside there first.

On CUDA the token budget is, for each GPU of the replica, the memory free once the model is loaded (what the
driver reports free, plus what PyTorch's allocator holds unused), times `utilization` (allocator
fragmentation, the decode step's temporaries), less the vision workspace, divided by that GPU's cost per
token; the replica's budget is the smallest. The row limit is a fixed 256: decoding is bound by kernel
launches, not arithmetic, until far more rows than that, so more rows at once are nearly free throughput, and
the token budget is what bounds memory. On the CPU: 32 rows, 65,536 tokens.
"""

from __future__ import annotations

import logging

import torch

from internvl_batch.model.device_map import EMBEDDINGS_MODULE, device_of

log = logging.getLogger(__name__)

GIB = 1024**3
AUTO_ROWS_CUDA = 256
AUTO_ROWS_CPU = 32
AUTO_TOKENS_CPU = 65536
VISION_MODULE = "model.vision_tower"
LAYER_PREFIX = "model.language_model.layers."


def kv_bytes_per_token_layer(text_config, dtype_bytes: int) -> int:
    """KV cache of one token in one LLM layer: keys and values, `num_key_value_heads x head_dim` each."""
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    return 2 * text_config.num_key_value_heads * head_dim * dtype_bytes


def activation_bytes_per_token(text_config, dtype_bytes: int) -> int:
    """One LLM layer's prefill activations per token (the MLP's gate and up projections dominate)."""
    return (2 * text_config.intermediate_size + 4 * text_config.hidden_size) * dtype_bytes


def embedding_bytes_per_token(text_config, dtype_bytes: int) -> int:
    """The prefill's input embeddings per token on the main GPU: about three copies during generation."""
    return 3 * text_config.hidden_size * dtype_bytes


def per_token_bytes(text_config, layer_counts: list[int], dtype_bytes: int) -> list[int]:
    """Bytes one token of a generating row costs on each GPU of a replica, `layer_counts[i]` LLM layers on
    GPU i: its layers' KV cache, one layer's activations, and (GPU 0, the main one) the input embeddings."""
    kv = kv_bytes_per_token_layer(text_config, dtype_bytes)
    activations = activation_bytes_per_token(text_config, dtype_bytes)
    embeddings = embedding_bytes_per_token(text_config, dtype_bytes)
    return [count * kv + activations + (embeddings if gpu == 0 else 0) for gpu, count in enumerate(layer_counts)]


def tile_positions(vision_config) -> int:
    """Positions of one tile in the vision tower: its patches and the class token (1,025 for 448 / 14)."""
    image, patch = _pair(getattr(vision_config, "image_size", 448)), _pair(getattr(vision_config, "patch_size", 14))
    return (image[0] // patch[0]) * (image[1] // patch[1]) + 1


def vision_workspace_bytes(vision_config, tiles: int, dtype_bytes: int) -> int:
    """One ViT layer's activations for `tiles` tiles at once (a chunk of `batching.vision_chunk_tiles`)."""
    width = vision_config.intermediate_size + 4 * vision_config.hidden_size
    return tiles * tile_positions(vision_config) * width * dtype_bytes


def llm_layer_counts(device_map: dict[str, int | str], gpus: list[int]) -> list[int]:
    """LLM layers on each of `gpus` (GPU indices) under `device_map` (module name -> GPU index, or a CUDA
    device such as "cuda:1")."""
    counts = dict.fromkeys(gpus, 0)
    for module, where in device_map.items():
        if module.startswith(LAYER_PREFIX) and module[len(LAYER_PREFIX) :].isdigit():
            counts[gpu_index(where)] = counts.get(gpu_index(where), 0) + 1
    return [counts[gpu] for gpu in gpus]


def gpu_index(where: int | str | torch.device) -> int:
    if isinstance(where, int):
        return where
    return torch.device(where).index or 0


def resolve_limits(
    batching,
    model,
    device: torch.device,
    dtype: torch.dtype,
    device_map: dict[str, str] | None = None,
    utilization: float = 0.9,
    free_bytes: list[int] | None = None,
) -> tuple[int, int]:
    """(max rows, max tokens) generating at once on a loaded replica: `batching.max_batch_rows` and
    `batching.max_batch_tokens` where they are numbers, "auto" resolved as the module says.

    `model`: the loaded `InternVLForConditionalGeneration` (only its config is read); `device`: the replica's
    (main) device; `device_map`: module name -> "cuda:i" for a replica on several GPUs
    (`placement.replica_device_map`), None for one device; `free_bytes`: the free memory of each GPU, in the
    order GPU 0 (the embeddings' GPU) then the others by index, instead of asking CUDA (tests)."""
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization}")
    auto_rows, auto_tokens = batching.max_batch_rows == "auto", batching.max_batch_tokens == "auto"
    rows = batching.max_batch_rows
    tokens = batching.max_batch_tokens
    if device.type != "cuda":
        rows = AUTO_ROWS_CPU if auto_rows else rows
        tokens = AUTO_TOKENS_CPU if auto_tokens else tokens
        where = f"auto on {device.type}"
        _log(rows, tokens, where if auto_rows else None, where if auto_tokens else None)
        return rows, tokens
    rows = AUTO_ROWS_CUDA if auto_rows else rows
    if not auto_tokens:
        _log(rows, tokens, "auto on cuda" if auto_rows else None, None)
        return rows, tokens
    tokens, source = _cuda_token_budget(batching, model, device, dtype, device_map, utilization, free_bytes)
    _log(rows, tokens, "auto on cuda" if auto_rows else None, source)
    return rows, tokens


def _cuda_token_budget(batching, model, device, dtype, device_map, utilization, free_bytes) -> tuple[int, str]:
    text, vision = model.config.text_config, model.config.vision_config
    size = dtype.itemsize
    if device_map:
        main = gpu_index(device_of(EMBEDDINGS_MODULE, device_map))
        gpus = [main, *sorted({gpu_index(g) for g in device_map.values()} - {main})]
        layers = llm_layer_counts(device_map, gpus)
        vision_gpu = gpu_index(device_of(VISION_MODULE, device_map))
    else:
        gpus = [device.index]  # None: the current CUDA device
        layers = [text.num_hidden_layers]
        vision_gpu = device.index
    costs = per_token_bytes(text, layers, size)
    workspace = vision_workspace_bytes(vision, batching.vision_chunk_tiles, size)
    measured = free_bytes is None
    if measured:
        free_bytes = [_free_cuda_bytes(gpu) for gpu in gpus]
    elif len(free_bytes) != len(gpus):
        raise ValueError(f"free_bytes has {len(free_bytes)} entries for a replica on {len(gpus)} GPUs")
    budgets = []
    for gpu, free, cost in zip(gpus, free_bytes, costs):
        room = free * utilization - (workspace if gpu == vision_gpu else 0)
        budgets.append((int(room // cost), gpu, free, cost, room))
    tokens, gpu, free, cost, room = min(budgets, key=lambda b: b[0])
    name = "cuda" if gpu is None else f"cuda:{gpu}"
    tightest = f" (the tightest of {len(gpus)} GPUs)" if len(gpus) > 1 else ""
    less = f", less {workspace / GIB:.2f} GiB vision workspace" if gpu == vision_gpu else ""
    when = "now" if measured else "(given)"
    source = (
        f"auto: {name}{tightest} has {free / GIB:.2f} GiB free {when} x {utilization:g}{less}, "
        f"at {cost / 1024:.1f} KiB a token"
    )
    if tokens < 1:
        log.warning(
            "the model leaves no room to generate on %s (%.2f GiB free, %.2f GiB usable after the vision "
            "workspace): every row goes alone and may run out of memory; use more or larger GPUs per replica, or "
            "set batching.max_batch_tokens",
            name,
            free / GIB,
            room / GIB,
        )
        tokens = 1
    return tokens, source


def _free_cuda_bytes(gpu: int | None) -> int:
    """What this process can still allocate on a GPU: free in the driver plus cached unused by PyTorch."""
    device = torch.device("cuda") if gpu is None else torch.device("cuda", gpu)
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def _log(rows: int, tokens: int, rows_source: str | None, tokens_source: str | None) -> None:
    log.info(
        "batch limits: %d rows (%s), %d tokens (%s)",
        rows,
        rows_source or "batching.max_batch_rows",
        tokens,
        tokens_source or "batching.max_batch_tokens",
    )


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
