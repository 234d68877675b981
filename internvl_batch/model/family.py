"""The seven InternVL 2.5 architectures, known offline (for `plan`, device maps and tests without weights).

Each entry is written as an original-layout `config.json` (the published checkpoints' fields), so it goes
through the same conversion as a real checkpoint. Sizes from the model card's family table.
"""

from __future__ import annotations

import copy

VIT_300M = {
    "architectures": ["InternVisionModel"],
    "model_type": "intern_vit_6b",
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "norm_type": "layer_norm",
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
    "qk_normalization": False,
    "hidden_act": "gelu",
    "image_size": 448,
    "patch_size": 14,
    "num_channels": 3,
}
VIT_6B = {
    **VIT_300M,
    "hidden_size": 3200,
    "num_hidden_layers": 45,
    "num_attention_heads": 25,
    "intermediate_size": 12800,
    "norm_type": "rms_norm",
    "qkv_bias": False,
    "qk_normalization": True,
}


def _qwen2(layers, hidden, heads, kv, ffn):
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": ffn,
        "vocab_size": 151674,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": 32768,
        "max_window_layers": layers,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    }


def _internlm2(layers, hidden, heads, kv, ffn):
    return {
        "architectures": ["InternLM2ForCausalLM"],
        "model_type": "internlm2",
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": ffn,
        "vocab_size": 92553,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "dynamic", "factor": 2.0},
        "max_position_embeddings": 32768,
        "bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }


FAMILY = {
    "InternVL2_5-1B": (VIT_300M, _qwen2(24, 896, 14, 2, 4864)),
    "InternVL2_5-2B": (VIT_300M, _internlm2(24, 2048, 16, 8, 8192)),
    "InternVL2_5-4B": (VIT_300M, _qwen2(36, 2048, 16, 2, 11008)),
    "InternVL2_5-8B": (VIT_300M, _internlm2(32, 4096, 32, 8, 14336)),
    "InternVL2_5-26B": (VIT_6B, _internlm2(48, 6144, 48, 8, 16384)),
    "InternVL2_5-38B": (VIT_6B, _qwen2(64, 5120, 40, 8, 27648)),
    "InternVL2_5-78B": (VIT_6B, _qwen2(80, 8192, 64, 8, 29568)),
}


def family_name(model: str) -> str | None:
    """`OpenGVLab/InternVL2_5-78B` (or a path ending in that name) -> `InternVL2_5-78B`, else None."""
    name = str(model).rstrip("/").rsplit("/", 1)[-1]
    return name if name in FAMILY else None


def family_config(name: str) -> dict:
    """An original-layout config.json for a family member."""
    vision, llm = FAMILY[name]
    return {
        "architectures": ["InternVLChatModel"],
        "model_type": "internvl_chat",
        "template": "internvl2_5",
        "downsample_ratio": 0.5,
        "ps_version": "v2",
        "select_layer": -1,
        "force_image_size": 448,
        "dynamic_image_size": True,
        "use_thumbnail": True,
        "min_dynamic_patch": 1,
        "max_dynamic_patch": 12,
        "vision_config": copy.deepcopy(vision),
        "llm_config": copy.deepcopy(llm),
    }
