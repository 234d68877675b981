"""Original InternVL 2.5 checkpoint -> transformers' native `InternVLForConditionalGeneration`, at load time.

Config: `vision_config` maps onto `InternVLVisionConfig` (qkv_bias -> attention_bias, qk_normalization ->
use_qk_norm, no pooling layer norm: the original tower has none), `llm_config` onto a Qwen2 config with only
the architecture fields carried over (old configs hold dozens of generation and bookkeeping keys).

Weights: renamed one by one; the vision `attn.qkv` projection is split into q, k and v by rows in thirds.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import torch

from internvl_batch.errors import ModelLoadError

# llm_config keys that define the Qwen2 architecture; everything else in old configs is ignored.
QWEN2_ARCH_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
    "rope_scaling", "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout",
    "bos_token_id", "eos_token_id",
)  # fmt: skip


def native_config(raw: dict[str, Any], image_token_id: int):
    """An `InternVLConfig` equivalent to an original (`internvl_chat`) config.json."""
    from transformers import InternVLConfig

    vision = raw.get("vision_config") or {}
    llm = raw.get("llm_config") or {}
    if raw.get("ps_version", "v2") != "v2":
        raise ModelLoadError(f"pixel shuffle version {raw.get('ps_version')!r} is not supported (InternVL 2.5 uses v2)")
    if int(raw.get("select_layer", -1)) != -1:
        raise ModelLoadError(f"select_layer={raw.get('select_layer')} is not supported (InternVL 2.5 uses -1)")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size") if k not in vision]
    missing += [f"llm_config.{k}" for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in llm]
    if missing:
        raise ModelLoadError(f"config.json lacks {', '.join(missing)}")
    vision_config = {
        "hidden_size": vision["hidden_size"],
        "num_hidden_layers": vision["num_hidden_layers"],
        "num_attention_heads": vision["num_attention_heads"],
        "intermediate_size": vision["intermediate_size"],
        "attention_bias": bool(vision.get("qkv_bias", True)),
        "use_qk_norm": bool(vision.get("qk_normalization", False)),
        "norm_type": vision.get("norm_type", "layer_norm"),
        "layer_norm_eps": float(vision.get("layer_norm_eps", 1e-6)),
        "hidden_act": vision.get("hidden_act", "gelu"),
        "image_size": int(raw.get("force_image_size") or vision.get("image_size", 448)),
        "patch_size": int(vision.get("patch_size", 14)),
        # The original tower has no final norm; use_mean_pooling=True makes the native one an identity.
        "use_mean_pooling": True,
    }
    text_config = {k: llm[k] for k in QWEN2_ARCH_KEYS if k in llm}
    text_config.update(model_type="qwen2", tie_word_embeddings=False)
    return InternVLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        downsample_ratio=float(raw.get("downsample_ratio", 0.5)),
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


_VISION_LAYER = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.(.+)$")
_VISION_LAYER_RENAMES = {
    "attn.proj.": "attention.projection_layer.",
    "attn.q_norm.": "attention.q_norm.",
    "attn.k_norm.": "attention.k_norm.",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
    "norm1.": "layernorm_before.",
    "norm2.": "layernorm_after.",
}
_FIXED_RENAMES = {
    "vision_model.embeddings.class_embedding": "model.vision_tower.embeddings.cls_token",
    "vision_model.embeddings.position_embedding": "model.vision_tower.embeddings.position_embeddings",
    "vision_model.embeddings.patch_embedding.weight": "model.vision_tower.embeddings.patch_embeddings.projection.weight",
    "vision_model.embeddings.patch_embedding.bias": "model.vision_tower.embeddings.patch_embeddings.projection.bias",
    "language_model.lm_head.weight": "lm_head.weight",
}
_PROJECTOR = {"mlp1.0.": "layer_norm.", "mlp1.1.": "linear_1.", "mlp1.3.": "linear_2."}


def convert_key(key: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """Native (name, tensor) pairs for one original weight; raises KeyError for a name it does not know."""
    if key in _FIXED_RENAMES:
        yield _FIXED_RENAMES[key], tensor
        return
    if key.startswith("language_model.model."):
        yield "model.language_model." + key[len("language_model.model.") :], tensor
        return
    for old, new in _PROJECTOR.items():
        if key.startswith(old):
            yield "model.multi_modal_projector." + new + key[len(old) :], tensor
            return
    match = _VISION_LAYER.match(key)
    if match:
        index, rest = match.groups()
        prefix = f"model.vision_tower.encoder.layer.{index}."
        if rest.startswith("attn.qkv."):
            suffix = rest[len("attn.qkv.") :]
            if tensor.shape[0] % 3:
                raise ModelLoadError(f"{key}: first dimension {tensor.shape[0]} is not q, k and v stacked")
            for name, part in zip(("q_proj", "k_proj", "v_proj"), torch.chunk(tensor, 3, dim=0)):
                yield f"{prefix}attention.{name}.{suffix}", part
            return
        if rest in ("ls1", "ls2"):
            yield prefix + ("lambda_1" if rest == "ls1" else "lambda_2"), tensor
            return
        for old, new in _VISION_LAYER_RENAMES.items():
            if rest.startswith(old):
                yield prefix + new + rest[len(old) :], tensor
                return
    raise KeyError(key)
