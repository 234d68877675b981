"""Straightforward implementations of the original InternVL 2.5 architecture, written from its published
definition, run directly on original-layout weights: the yardstick for our converted native models."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from internvl_batch.model.loader import safetensors_files


def original_weights(path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    weights = {}
    for file in safetensors_files(path):
        with safe_open(str(file), "pt") as f:
            weights.update({k: f.get_tensor(k).to(torch.float64) for k in f.keys()})
    return weights


def rms_norm(x, weight, eps):
    # As the published InternRMSNorm / InternLM2RMSNorm: computed in float32, whatever the input dtype.
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def pixel_shuffle_v2(x, scale=0.5):
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3)
    x = x.reshape(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x.permute(0, 2, 1, 3)


def image_features(w, cfg, pixels):
    """InternViT (300M: LayerNorm + qkv bias; 6B: RMSNorm + qk norm over the full width, no qkv bias), CLS
    dropped, pixel shuffle v2, the `mlp1` projector."""
    v = cfg["vision_config"]
    heads, eps, rms = v["num_attention_heads"], v["layer_norm_eps"], v["norm_type"] == "rms_norm"
    pre = "vision_model.embeddings."
    x = F.conv2d(pixels, w[pre + "patch_embedding.weight"], w[pre + "patch_embedding.bias"], stride=v["patch_size"])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([w[pre + "class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + w[pre + "position_embedding"]
    n, length, c = x.shape

    def norm(t, name):
        if rms:
            return rms_norm(t, w[name + ".weight"], eps)
        return F.layer_norm(t, (c,), w[name + ".weight"], w[name + ".bias"], eps)

    for i in range(v["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        qkv = F.linear(norm(x, p + "norm1"), w[p + "attn.qkv.weight"], w.get(p + "attn.qkv.bias"))
        q, k, val = qkv.reshape(n, length, 3, c).unbind(2)
        if v["qk_normalization"]:
            q, k = rms_norm(q, w[p + "attn.q_norm.weight"], eps), rms_norm(k, w[p + "attn.k_norm.weight"], eps)
        q, k, val = (t.reshape(n, length, heads, c // heads).transpose(1, 2) for t in (q, k, val))
        attn = torch.softmax(q @ k.transpose(-1, -2) * (c // heads) ** -0.5, dim=-1) @ val
        attn = F.linear(attn.transpose(1, 2).reshape(n, length, c), w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        x = x + w[p + "ls1"] * attn
        h = norm(x, p + "norm2")
        h = F.linear(
            F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])),
            w[p + "mlp.fc2.weight"],
            w[p + "mlp.fc2.bias"],
        )
        x = x + w[p + "ls2"] * h
    x = x[:, 1:]
    side = int(x.shape[1] ** 0.5)
    x = pixel_shuffle_v2(x.reshape(n, side, side, c), cfg["downsample_ratio"]).reshape(n, -1, 4 * c)
    x = F.layer_norm(x, (4 * c,), w["mlp1.0.weight"], w["mlp1.0.bias"], 1e-5)
    return F.linear(F.gelu(F.linear(x, w["mlp1.1.weight"], w["mlp1.1.bias"])), w["mlp1.3.weight"], w["mlp1.3.bias"])


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def internlm2_logits(w, cfg, embeds):
    """InternLM2 (the published modeling): per layer RMSNorm -> fused wqkv grouped per KV head as
    [q x g, k, v] -> rotary -> causal GQA attention -> wo; RMSNorm -> w2(silu(w1 x) * w3 x); final norm,
    `output` head. `embeds` is [T, hidden] (one sequence, positions 0..T-1, no scaling below the context)."""
    llm = cfg["llm_config"]
    heads, kv = llm["num_attention_heads"], llm["num_key_value_heads"]
    hidden, eps, theta = llm["hidden_size"], llm["rms_norm_eps"], float(llm["rope_theta"])
    hd, g = hidden // heads, heads // kv
    t = embeds.shape[0]
    # The published rotary embedding works in float32 and casts cos/sin to the activations' dtype.
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], -1)
    cos, sin = emb.cos().to(embeds.dtype)[:, None], emb.sin().to(embeds.dtype)[:, None]
    mask = torch.full((t, t), float("-inf"), dtype=torch.float64).triu(1)
    x = embeds
    for i in range(llm["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}."
        qkv = F.linear(rms_norm(x, w[p + "attention_norm.weight"], eps), w[p + "attention.wqkv.weight"])
        qkv = qkv.reshape(t, kv, g + 2, hd)
        q, k, v = qkv[:, :, :g].reshape(t, heads, hd), qkv[:, :, g], qkv[:, :, g + 1]
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / hd**0.5 + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)  # the published code upcasts here
        attn = torch.einsum("hqk,khd->qhd", probs, v).reshape(t, heads * hd)
        x = x + F.linear(attn, w[p + "attention.wo.weight"])
        h = rms_norm(x, w[p + "ffn_norm.weight"], eps)
        x = x + F.linear(
            F.silu(F.linear(h, w[p + "feed_forward.w1.weight"])) * F.linear(h, w[p + "feed_forward.w3.weight"]),
            w[p + "feed_forward.w2.weight"],
        )
    x = rms_norm(x, w["language_model.model.norm.weight"], eps)
    return F.linear(x, w["language_model.output.weight"])
