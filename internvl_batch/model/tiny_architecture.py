"""The tiny checkpoint's architecture: the published InternVL 2.5 `config.json` with narrow layers, and every
weight name and shape that config implies.

The architecture is the real one (448-pixel tiles, 256 tokens per tile, pixel shuffle, MLP projector, a Qwen2 or
an InternLM2 LLM, an InternViT-300M- or 6B-style vision tower), only narrow. `model/tiny.py` writes the files.
"""

from __future__ import annotations

TINY_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TINY_LLM = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128
)
LLMS = ("qwen2", "internlm2")
VISIONS = ("300m-style", "6b-style")


def original_config(
    vocab_size: int, im_end_id: int, endoftext_id: int, llm_type: str = "qwen2", vision_style: str = "300m-style"
) -> dict:
    """config.json of the published layout: InternViT-300M style (LayerNorm, qkv bias) or InternViT-6B style
    (RMSNorm, qk norm, no qkv bias); a Qwen2 or an InternLM2 language model."""
    six_b = vision_style == "6b-style"
    vision = {
        "architectures": ["InternVisionModel"],
        "model_type": "intern_vit_6b",
        "attention_dropout": 0.0,
        "drop_path_rate": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        "image_size": 448,
        "initializer_factor": 1.0 if not six_b else 0.1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-06,
        "norm_type": "rms_norm" if six_b else "layer_norm",
        "num_channels": 3,
        "patch_size": 14,
        "qk_normalization": six_b,
        "qkv_bias": not six_b,
        "torch_dtype": "bfloat16",
        "use_flash_attn": True,
        **TINY_VISION,
    }
    if llm_type == "internlm2":
        llm = {
            "architectures": ["InternLM2ForCausalLM"],
            "model_type": "internlm2",
            "attn_implementation": "eager",
            "auto_map": {
                "AutoConfig": "configuration_internlm2.InternLM2Config",
                "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
            },
            "bias": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {"type": "dynamic", "factor": 2.0},
            "rope_theta": 1000000,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "use_cache": True,
            "vocab_size": vocab_size,
            **TINY_LLM,
        }
    else:
        llm = {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "attention_dropout": 0.0,
            "bos_token_id": endoftext_id,
            "eos_token_id": im_end_id,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "max_position_embeddings": 32768,
            "max_window_layers": TINY_LLM["num_hidden_layers"],
            "rms_norm_eps": 1e-06,
            "rope_scaling": None,
            "rope_theta": 1000000.0,
            "sliding_window": 32768,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": vocab_size,
            **TINY_LLM,
        }
    return {
        "architectures": ["InternVLChatModel"],
        "auto_map": {
            "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel",
            "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
        },
        "downsample_ratio": 0.5,
        "dynamic_image_size": True,
        "force_image_size": 448,
        "llm_config": llm,
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "model_type": "internvl_chat",
        "ps_version": "v2",
        "select_layer": -1,
        "template": "internvl2_5",
        "torch_dtype": "bfloat16",
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": True,
        "vision_config": vision,
    }


def original_weight_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every weight of an original-layout InternVL 2.5 (InternViT + MLP projector + Qwen2 or InternLM2), by name."""
    v, llm = config["vision_config"], config["llm_config"]
    cv, iv, h, i = v["hidden_size"], v["intermediate_size"], llm["hidden_size"], llm["intermediate_size"]
    head_dim = h // llm["num_attention_heads"]
    q_dim, kv_dim = llm["num_attention_heads"] * head_dim, llm["num_key_value_heads"] * head_dim
    patches = (v["image_size"] // v["patch_size"]) ** 2
    shuffled = cv * int(1 / config["downsample_ratio"]) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.class_embedding": (1, 1, cv),
        "vision_model.embeddings.position_embedding": (1, patches + 1, cv),
        "vision_model.embeddings.patch_embedding.weight": (cv, 3, v["patch_size"], v["patch_size"]),
        "vision_model.embeddings.patch_embedding.bias": (cv,),
    }
    for n in range(v["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{n}."
        shapes.update(
            {p + "attn.qkv.weight": (3 * cv, cv), p + "attn.proj.weight": (cv, cv), p + "attn.proj.bias": (cv,)}
        )
        if v["qkv_bias"]:
            shapes[p + "attn.qkv.bias"] = (3 * cv,)
        if v["qk_normalization"]:
            shapes.update({p + "attn.q_norm.weight": (cv,), p + "attn.k_norm.weight": (cv,)})
        shapes.update(
            {
                p + "mlp.fc1.weight": (iv, cv),
                p + "mlp.fc1.bias": (iv,),
                p + "mlp.fc2.weight": (cv, iv),
                p + "mlp.fc2.bias": (cv,),
                p + "norm1.weight": (cv,),
                p + "norm2.weight": (cv,),
                p + "ls1": (cv,),
                p + "ls2": (cv,),
            }
        )
        if v["norm_type"] == "layer_norm":
            shapes.update({p + "norm1.bias": (cv,), p + "norm2.bias": (cv,)})
    shapes.update(
        {
            "mlp1.0.weight": (shuffled,),
            "mlp1.0.bias": (shuffled,),
            "mlp1.1.weight": (h, shuffled),
            "mlp1.1.bias": (h,),
            "mlp1.3.weight": (h, h),
            "mlp1.3.bias": (h,),
        }
    )
    if llm["architectures"][0] == "InternLM2ForCausalLM":
        shapes.update(_internlm2_shapes(llm, q_dim, kv_dim, h, i))
        return shapes
    shapes.update(
        {
            "language_model.model.embed_tokens.weight": (llm["vocab_size"], h),
            "language_model.model.norm.weight": (h,),
            "language_model.lm_head.weight": (llm["vocab_size"], h),
        }
    )
    for n in range(llm["num_hidden_layers"]):
        p = f"language_model.model.layers.{n}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (q_dim, h),
                p + "self_attn.q_proj.bias": (q_dim,),
                p + "self_attn.k_proj.weight": (kv_dim, h),
                p + "self_attn.k_proj.bias": (kv_dim,),
                p + "self_attn.v_proj.weight": (kv_dim, h),
                p + "self_attn.v_proj.bias": (kv_dim,),
                p + "self_attn.o_proj.weight": (h, q_dim),
                p + "mlp.gate_proj.weight": (i, h),
                p + "mlp.up_proj.weight": (i, h),
                p + "mlp.down_proj.weight": (h, i),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        )
    return shapes


def _internlm2_shapes(llm: dict, q_dim: int, kv_dim: int, h: int, i: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "language_model.model.tok_embeddings.weight": (llm["vocab_size"], h),
        "language_model.model.norm.weight": (h,),
        "language_model.output.weight": (llm["vocab_size"], h),
    }
    for n in range(llm["num_hidden_layers"]):
        p = f"language_model.model.layers.{n}."
        shapes.update(
            {
                p + "attention.wqkv.weight": (q_dim + 2 * kv_dim, h),
                p + "attention.wo.weight": (h, q_dim),
                p + "feed_forward.w1.weight": (i, h),
                p + "feed_forward.w3.weight": (i, h),
                p + "feed_forward.w2.weight": (h, i),
                p + "attention_norm.weight": (h,),
                p + "ffn_norm.weight": (h,),
            }
        )
        if llm.get("bias"):
            shapes.update({p + "attention.wqkv.bias": (q_dim + 2 * kv_dim,), p + "attention.wo.bias": (h,)})
    return shapes
