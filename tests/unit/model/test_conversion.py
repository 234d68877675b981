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

from internvl_batch.generation.pixels import normalize_tiles
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.model.checkpoint import read_checkpoint_info
from internvl_batch.model.loader import load_model
from internvl_batch.prompts import PromptBuilder
from tests.media import encode, make_photo
from tests.reference_impl import image_features, original_weights


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
        ref = image_features(weights, cfg, pixels)
    assert ours.shape == ref.shape == (len(tiles), 256, cfg["llm_config"]["hidden_size"])
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_full_forward_logits_equal_reference(setup):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model, weights, cfg, builder = setup
    llm_cfg = {k: v for k, v in cfg["llm_config"].items() if k not in ("architectures", "torch_dtype")}
    reference_llm = Qwen2ForCausalLM._from_config(
        Qwen2Config(**llm_cfg), attn_implementation="eager", dtype=torch.float64
    )
    reference_llm.eval()
    llm_weights = {k[len("language_model.") :]: t for k, t in weights.items() if k.startswith("language_model.")}
    reference_llm.load_state_dict(llm_weights, strict=True)

    processed = ImagePreprocessor()(encode(make_photo(634, 634), "PNG"))
    ids = torch.from_numpy(builder.build("What is this?", [processed.num_tiles]).input_ids)[None]
    pixels = normalize_tiles(processed.tiles, dtype=torch.float64)
    with torch.no_grad():
        ours = model(input_ids=ids, pixel_values=pixels).logits
        embeds = reference_llm.get_input_embeddings()(ids)
        embeds[ids == builder.image_context_id] = image_features(weights, cfg, pixels).reshape(-1, embeds.shape[-1])
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
