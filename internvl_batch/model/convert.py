"""Original InternVL 2.5 checkpoints -> transformers' native `InternVLForConditionalGeneration`, at load time.

Config: `vision_config` maps onto `InternVLVisionConfig` (qkv_bias -> attention_bias, qk_normalization ->
use_qk_norm, norm_type layer_norm/rms_norm, no pooling layer norm: the original tower has none). The LLM:
- Qwen2 (1B, 4B, 38B, 78B): a native Qwen2 config with the architecture fields carried over;
- InternLM2 (2B, 8B, 26B): a native Llama config (InternLM2 is Llama's architecture with fused qkv and other
  names): `bias` -> attention_bias, the rope settings (theta, dynamic NTK scaling) carried over.

Weights are renamed one by one. Splits: the vision `attn.qkv` by rows in thirds (q, k, v); InternLM2's
`wqkv`, whose rows are grouped per KV head as [q x g, k, v] (g = heads / kv_heads, head_dim rows each).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import torch

from internvl_batch.errors import ModelLoadError

# llm_config keys that define the architecture; everything else in old configs is ignored.
COMMON_ARCH_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "bos_token_id",
    "eos_token_id",
)
QWEN2_ARCH_KEYS = COMMON_ARCH_KEYS + ("use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout")


def llm_type(raw: dict) -> str:
    architectures = (raw.get("llm_config") or {}).get("architectures") or [None]
    return {"Qwen2ForCausalLM": "qwen2", "InternLM2ForCausalLM": "internlm2"}.get(architectures[0], "unknown")


def _text_config(llm: dict, kind: str) -> dict:
    if kind == "qwen2":
        text = {k: llm[k] for k in QWEN2_ARCH_KEYS if k in llm}
        text.update(model_type="qwen2", tie_word_embeddings=False)
        return text
    text = {k: llm[k] for k in COMMON_ARCH_KEYS if k in llm}
    bias = bool(llm.get("bias", False))
    text.update(model_type="llama", tie_word_embeddings=False, attention_bias=bias, mlp_bias=False)
    return text


def native_config(raw: dict[str, Any], image_token_id: int):
    """An `InternVLConfig` equivalent to an original (`internvl_chat`) config.json."""
    from transformers import InternVLConfig

    vision = raw.get("vision_config") or {}
    llm = raw.get("llm_config") or {}
    if raw.get("ps_version", "v2") != "v2":
        raise ModelLoadError(f"pixel shuffle version {raw.get('ps_version')!r} is not supported (InternVL 2.5 uses v2)")
    if int(raw.get("select_layer", -1)) != -1:
        raise ModelLoadError(f"select_layer={raw.get('select_layer')} is not supported (InternVL 2.5 uses -1)")
    kind = llm_type(raw)
    if kind == "unknown":
        raise ModelLoadError(f"unsupported language model {(llm.get('architectures') or [None])[0]!r}")
    missing = [
        k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size") if k not in vision
    ]
    missing += [
        f"llm_config.{k}"
        for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        if k not in llm
    ]
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
    return InternVLConfig(
        vision_config=vision_config,
        text_config=_text_config(llm, kind),
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
    "language_model.lm_head.weight": "lm_head.weight",  # Qwen2
    "language_model.output.weight": "lm_head.weight",  # InternLM2
    "language_model.model.tok_embeddings.weight": "model.language_model.embed_tokens.weight",
}
_PROJECTOR = {"mlp1.0.": "layer_norm.", "mlp1.1.": "linear_1.", "mlp1.3.": "linear_2."}
_INTERNLM2_LAYER = re.compile(r"^language_model\.model\.layers\.(\d+)\.(.+)$")
_INTERNLM2_RENAMES = {
    "attention.wo.": "self_attn.o_proj.",
    "feed_forward.w1.": "mlp.gate_proj.",
    "feed_forward.w3.": "mlp.up_proj.",
    "feed_forward.w2.": "mlp.down_proj.",
    "attention_norm.": "input_layernorm.",
    "ffn_norm.": "post_attention_layernorm.",
}


class WeightConverter:
    """Maps original weight names (and tensors) to native ones for one checkpoint's config."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.kind = llm_type(raw)
        llm = raw.get("llm_config") or {}
        self.heads = int(llm.get("num_attention_heads", 1))
        self.kv_heads = int(llm.get("num_key_value_heads") or self.heads)
        self.head_dim = int(llm.get("hidden_size", 0)) // self.heads

    def __call__(self, key: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Native (name, tensor) pairs for one original weight; raises KeyError for a name it does not know."""
        if key in _FIXED_RENAMES:
            yield _FIXED_RENAMES[key], tensor
            return
        for old, new in _PROJECTOR.items():
            if key.startswith(old):
                yield "model.multi_modal_projector." + new + key[len(old) :], tensor
                return
        match = _VISION_LAYER.match(key)
        if match:
            yield from self._vision_layer(key, int(match.group(1)), match.group(2), tensor)
            return
        if self.kind == "internlm2":
            match = _INTERNLM2_LAYER.match(key)
            if match:
                yield from self._internlm2_layer(key, int(match.group(1)), match.group(2), tensor)
                return
            if key == "language_model.model.norm.weight":
                yield "model.language_model.norm.weight", tensor
                return
            raise KeyError(key)
        if key.startswith("language_model.model."):
            yield "model.language_model." + key[len("language_model.model.") :], tensor
            return
        raise KeyError(key)

    def _vision_layer(self, key: str, index: int, rest: str, tensor: torch.Tensor):
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

    def _internlm2_layer(self, key: str, index: int, rest: str, tensor: torch.Tensor):
        prefix = f"model.language_model.layers.{index}."
        if rest.startswith("attention.wqkv."):
            suffix = rest[len("attention.wqkv.") :]
            group = self.heads // self.kv_heads
            rows = self.kv_heads * (group + 2) * self.head_dim
            if tensor.shape[0] != rows:
                raise ModelLoadError(
                    f"{key}: {tensor.shape[0]} rows, expected {rows} for {self.heads}/{self.kv_heads} heads"
                )
            # Rows per KV head: g query heads, then its key, then its value (head_dim rows each).
            grouped = tensor.reshape(self.kv_heads, group + 2, self.head_dim, *tensor.shape[1:])
            q = grouped[:, :group].reshape(self.heads * self.head_dim, *tensor.shape[1:])
            k = grouped[:, group].reshape(self.kv_heads * self.head_dim, *tensor.shape[1:])
            v = grouped[:, group + 1].reshape(self.kv_heads * self.head_dim, *tensor.shape[1:])
            for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                yield f"{prefix}self_attn.{name}.{suffix}", part.contiguous()
            return
        for old, new in _INTERNLM2_RENAMES.items():
            if rest.startswith(old):
                yield prefix + new + rest[len(old) :], tensor
                return
        raise KeyError(key)
