"""The converted native model computes what the original InternVLChatModel computes.

The reference forward is written out here from the original architecture's published definition and run on
the checkpoint's own (original-layout) weights: InternViT (pre-norm blocks with layer scale, qkv stacked by
thirds), CLS dropped, pixel shuffle v2, `mlp1` projector, features written at the <IMG_CONTEXT> positions of
Qwen2ForCausalLM's input embeddings (the original wraps exactly that class).
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from internvl_batch.generation.pixels import normalize_tiles
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.model.checkpoint import read_checkpoint_info
from internvl_batch.model.loader import load_model, safetensors_files
from internvl_batch.prompts import PromptBuilder
from tests.media import encode, make_photo


def original_weights(path):
    weights = {}
    for file in safetensors_files(path):
        with safe_open(str(file), "pt") as f:
            weights.update({k: f.get_tensor(k).to(torch.float64) for k in f.keys()})
    return weights


def pixel_shuffle_v2(x, scale=0.5):
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3)
    x = x.reshape(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x.permute(0, 2, 1, 3)


def reference_image_features(w, cfg, pixels):
    v = cfg["vision_config"]
    heads, eps = v["num_attention_heads"], v["layer_norm_eps"]
    pre = "vision_model.embeddings."
    x = F.conv2d(pixels, w[pre + "patch_embedding.weight"], w[pre + "patch_embedding.bias"], stride=v["patch_size"])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([w[pre + "class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + w[pre + "position_embedding"]
    n, length, c = x.shape
    for i in range(v["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        h = F.layer_norm(x, (c,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps)
        qkv = F.linear(h, w[p + "attn.qkv.weight"], w.get(p + "attn.qkv.bias"))
        q, k, val = qkv.reshape(n, length, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) * (c // heads) ** -0.5, dim=-1) @ val
        attn = F.linear(attn.transpose(1, 2).reshape(n, length, c), w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        x = x + w[p + "ls1"] * attn
        h = F.layer_norm(x, (c,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps)
        h = F.linear(F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])), w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])
        x = x + w[p + "ls2"] * h
    x = x[:, 1:]
    side = int(x.shape[1] ** 0.5)
    x = pixel_shuffle_v2(x.reshape(n, side, side, c), cfg["downsample_ratio"]).reshape(n, -1, 4 * c)
    x = F.layer_norm(x, (4 * c,), w["mlp1.0.weight"], w["mlp1.0.bias"], 1e-5)
    return F.linear(F.gelu(F.linear(x, w["mlp1.1.weight"], w["mlp1.1.bias"])), w["mlp1.3.weight"], w["mlp1.3.bias"])


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tiny_tokenizer):
    info = read_checkpoint_info(tiny_checkpoint)
    builder = PromptBuilder(tiny_tokenizer, info.system_message)
    model = load_model(info, torch.float64, "cpu", "eager", builder.image_context_id)
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    return model, original_weights(tiny_checkpoint), cfg, builder


def test_image_features_equal_reference(setup):
    model, weights, cfg, _ = setup
    tiles = ImagePreprocessor()(encode(make_photo(900, 500), "PNG")).tiles
    pixels = normalize_tiles(tiles, dtype=torch.float64)
    with torch.no_grad():
        ours = model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output
        ref = reference_image_features(weights, cfg, pixels)
    assert ours.shape == ref.shape == (len(tiles), 256, cfg["llm_config"]["hidden_size"])
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_full_forward_logits_equal_reference(setup):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model, weights, cfg, builder = setup
    llm_cfg = {k: v for k, v in cfg["llm_config"].items() if k not in ("architectures", "torch_dtype")}
    reference_llm = Qwen2ForCausalLM._from_config(Qwen2Config(**llm_cfg), attn_implementation="eager", dtype=torch.float64)
    reference_llm.eval()
    llm_weights = {k[len("language_model.") :]: t for k, t in weights.items() if k.startswith("language_model.")}
    reference_llm.load_state_dict(llm_weights, strict=True)

    processed = ImagePreprocessor()(encode(make_photo(634, 634), "PNG"))
    ids = torch.from_numpy(builder.build("What is this?", [processed.num_tiles]).input_ids)[None]
    pixels = normalize_tiles(processed.tiles, dtype=torch.float64)
    with torch.no_grad():
        ours = model(input_ids=ids, pixel_values=pixels).logits
        embeds = reference_llm.get_input_embeddings()(ids)
        embeds[ids == builder.image_context_id] = reference_image_features(weights, cfg, pixels).reshape(-1, embeds.shape[-1])
        ref = reference_llm(inputs_embeds=embeds).logits
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_lm_head_is_not_tied_to_embeddings(setup):
    model, weights, _, _ = setup
    assert not torch.equal(model.lm_head.weight, model.get_input_embeddings().weight)
    torch.testing.assert_close(model.lm_head.weight, weights["language_model.lm_head.weight"])


def test_rope_theta_carried_over(setup):
    model, _, cfg, _ = setup
    assert model.config.text_config.rope_parameters["rope_theta"] == cfg["llm_config"]["rope_theta"]
    head_dim = cfg["llm_config"]["hidden_size"] // cfg["llm_config"]["num_attention_heads"]
    expected = 1.0 / (cfg["llm_config"]["rope_theta"] ** (np.arange(0, head_dim, 2) / head_dim))
    np.testing.assert_allclose(model.model.language_model.rotary_emb.inv_freq.numpy(), expected, rtol=1e-6)
