"""Unusable checkpoints fail with one clear message; nothing is silently random-initialised."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from internvl_batch.errors import ModelLoadError, UnsupportedModelError
from internvl_batch.model.checkpoint import read_checkpoint_info
from internvl_batch.model.loader import load_model
from internvl_batch.model.locate import resolve_model_path


@pytest.fixture
def copy(tmp_path, tiny_checkpoint):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    return dst


def load(path):
    return load_model(read_checkpoint_info(path), torch.float32, "cpu", "sdpa", image_token_id=536)


def edit_shard(path, fn):
    index = json.loads((path / "model.safetensors.index.json").read_text())
    file = path / sorted(set(index["weight_map"].values()))[-1]
    tensors = load_file(str(file))
    fn(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})


def test_missing_weight(copy):
    edit_shard(copy, lambda t: t.pop("language_model.lm_head.weight"))
    with pytest.raises(ModelLoadError, match="missing from the checkpoint.*lm_head"):
        load(copy)


def test_unexpected_weight(copy):
    edit_shard(copy, lambda t: t.__setitem__("vision_model.encoder.layers.9.attn.qkv.weight", torch.zeros(3, 3)))
    with pytest.raises(ModelLoadError, match="unexpected weights.*layers.9"):
        load(copy)


def test_wrong_shape(copy):
    edit_shard(copy, lambda t: t.__setitem__("language_model.lm_head.weight", torch.zeros(7, 64)))
    with pytest.raises(ModelLoadError, match="shape"):
        load(copy)


def test_corrupt_shard(copy):
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    (copy / sorted(set(index["weight_map"].values()))[0]).write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot read weights"):
        load(copy)


def test_missing_shard(copy):
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    (copy / sorted(set(index["weight_map"].values()))[0]).unlink()
    with pytest.raises(ModelLoadError, match="weight files missing"):
        load(copy)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        read_checkpoint_info(tmp_path)


def test_unknown_language_model_is_refused(copy):
    cfg = json.loads((copy / "config.json").read_text())
    cfg["llm_config"]["architectures"] = ["Phi3ForCausalLM"]
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="unsupported language model architecture 'Phi3ForCausalLM'"):
        read_checkpoint_info(copy)


def test_other_model_type(copy):
    (copy / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(UnsupportedModelError, match="llava"):
        read_checkpoint_info(copy)


def test_checkpoint_defaults_read_from_config(copy):
    cfg = json.loads((copy / "config.json").read_text())
    cfg.update(max_dynamic_patch=6, use_thumbnail=False, system_message="Be brief.")
    (copy / "config.json").write_text(json.dumps(cfg))
    info = read_checkpoint_info(copy)
    assert (info.max_dynamic_patch, info.use_thumbnail, info.system_message) == (6, False, "Be brief.")


def test_hub_id_without_network_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="cannot fetch 'OpenGVLab/InternVL2_5-4B'.*hf download"):
        resolve_model_path("OpenGVLab/InternVL2_5-4B", cache_dir=str(tmp_path))


def test_neither_path_nor_hub_id():
    with pytest.raises(ModelLoadError, match="neither a local directory nor"):
        resolve_model_path("./no/such/dir/here")
