"""make-tiny-checkpoint writes the published layout, deterministically, and it loads through the real loader."""

import hashlib
import json
import re

import pytest
import torch
from safetensors import safe_open

from internvl_batch.model.checkpoint import read_checkpoint_info
from internvl_batch.model.loader import load_model, safetensors_files
from internvl_batch.model.tiny import make_tiny_checkpoint
from internvl_batch.model.tokenizer import load_tokenizer

# Weight names of the published InternVL 2.5 checkpoints (Qwen2 LLM, InternViT-300M), as patterns.
PUBLISHED_NAMES = [
    r"vision_model\.embeddings\.(class_embedding|position_embedding|patch_embedding\.(weight|bias))",
    r"vision_model\.encoder\.layers\.\d+\.(attn\.(qkv|proj)\.(weight|bias)|mlp\.fc[12]\.(weight|bias)|norm[12]\.(weight|bias)|ls[12])",
    r"mlp1\.[013]\.(weight|bias)",
    r"language_model\.model\.(embed_tokens\.weight|norm\.weight)",
    r"language_model\.model\.layers\.\d+\.(self_attn\.[qkv]_proj\.(weight|bias)|self_attn\.o_proj\.weight"
    r"|mlp\.(gate|up|down)_proj\.weight|(input|post_attention)_layernorm\.weight)",
    r"language_model\.lm_head\.weight",
]


def digest(directory):
    h = hashlib.sha256()
    for f in sorted(directory.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def weight_names(path):
    names = []
    for file in safetensors_files(path):
        with safe_open(str(file), "pt") as f:
            names += list(f.keys())
    return names


def test_deterministic_for_a_seed(tmp_path, tiny_checkpoint):
    again = make_tiny_checkpoint(tmp_path / "again", seed=0)
    other = make_tiny_checkpoint(tmp_path / "other", seed=1)
    assert digest(again) == digest(tiny_checkpoint)
    assert digest(other) != digest(tiny_checkpoint)


def test_published_config_fields_and_names(tiny_checkpoint):
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    assert cfg["architectures"] == ["InternVLChatModel"] and cfg["model_type"] == "internvl_chat"
    for key, value in {
        "template": "internvl2_5",
        "downsample_ratio": 0.5,
        "ps_version": "v2",
        "select_layer": -1,
        "force_image_size": 448,
        "dynamic_image_size": True,
        "use_thumbnail": True,
        "min_dynamic_patch": 1,
        "max_dynamic_patch": 12,
    }.items():
        assert cfg[key] == value, key
    assert cfg["llm_config"]["architectures"] == ["Qwen2ForCausalLM"]
    assert cfg["llm_config"]["tie_word_embeddings"] is False
    names = weight_names(tiny_checkpoint)
    unknown = [n for n in names if not any(re.fullmatch(p, n) for p in PUBLISHED_NAMES)]
    assert not unknown and len(names) == len(set(names))
    assert (tiny_checkpoint / "model.safetensors.index.json").is_file()


def test_tokenizer_carries_internvl_tokens_in_published_order(tiny_tokenizer):
    ids = tiny_tokenizer.convert_tokens_to_ids(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "</box>"]
    )
    base = ids[0]
    # Same offsets as Qwen2.5 + InternVL: 151643, 151644, 151645, 151665, 151666, 151667, 151673
    assert [i - base for i in ids] == [0, 1, 2, 22, 23, 24, 30]
    assert len(tiny_tokenizer) == base + 31


def test_vocab_matches_model(tiny_checkpoint, tiny_tokenizer):
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    assert cfg["llm_config"]["vocab_size"] == len(tiny_tokenizer)


def test_single_shard_layout_loads(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "one", shards=1)
    assert (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").exists()
    assert {oct(f.stat().st_mode & 0o777) for f in path.iterdir()} == {"0o644"}  # readable by others, like any file
    info = read_checkpoint_info(path)
    model = load_model(info, torch.float32, "cpu", "sdpa", load_tokenizer(info).convert_tokens_to_ids("<IMG_CONTEXT>"))
    assert all(not p.is_meta for p in model.parameters())


def test_refuses_non_empty_directory(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    with pytest.raises(FileExistsError):
        make_tiny_checkpoint(tmp_path / "x")


def test_hf_layout_loads_and_matches_original(tiny_checkpoint, tiny_hf_checkpoint):
    original = read_checkpoint_info(tiny_checkpoint)
    native = read_checkpoint_info(tiny_hf_checkpoint)
    assert (original.layout, native.layout) == ("original", "hf")
    image_id = load_tokenizer(original).convert_tokens_to_ids("<IMG_CONTEXT>")
    a = load_model(original, torch.float32, "cpu", "sdpa", image_id).state_dict()
    b = load_model(native, torch.float32, "cpu", "sdpa").state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
