"""Unusable checkpoints fail with one clear message; nothing is silently random-initialised."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from internvl_batch.config import ModelConfig, PipelineConfig
from internvl_batch.errors import ModelLoadError, UnsupportedModelError
from internvl_batch.generation.predictor import Predictor
from internvl_batch.job import check_model
from internvl_batch.model.checkpoint import read_checkpoint_info
from internvl_batch.model.loader import load_model
from internvl_batch.model.locate import resolve_model_path


@pytest.fixture
def copy(tmp_path, tiny_checkpoint):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    return dst


@pytest.fixture
def hf_copy(tmp_path, tiny_hf_checkpoint):
    dst = tmp_path / "hf-ckpt"
    shutil.copytree(tiny_hf_checkpoint, dst)
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


class Unpickled:
    """In a .bin weights file: loading it (unpickling) would leave a marker file behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def replace_with_pickles(path, shards: int):
    """The checkpoint's safetensors weights as pytorch_model*.bin pickles (the layout transformers once wrote)."""
    state, weight_map = {}, {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(file)))
        file.unlink()
    (path / "model.safetensors.index.json").unlink(missing_ok=True)
    marker = path.parent / f"{path.name}-unpickled"
    names = sorted(state)
    if shards == 1:
        torch.save({**state, "trap": Unpickled(marker)}, path / "pytorch_model.bin")
    else:
        for i in range(shards):
            name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
            part = {k: state[k] for k in names[i::shards]}
            weight_map.update(dict.fromkeys(part, name))
            torch.save({**part, "trap": Unpickled(marker)}, path / name)
        (path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return marker


@pytest.mark.parametrize("layout, shards", [("hf", 1), ("original", 1), ("original", 2)])
def test_pickled_weights_fail_the_drivers_check_as_they_fail_the_replica(layout, shards, request):
    path = request.getfixturevalue("hf_copy" if layout == "hf" else "copy")
    marker = replace_with_pickles(path, shards)
    message = f"{path.resolve()} has only pytorch_model*.bin weights; convert them to safetensors"
    config = PipelineConfig(model=ModelConfig(path=str(path)))
    with pytest.raises(ModelLoadError) as driver:
        check_model(config)
    with pytest.raises(ModelLoadError) as replica:
        Predictor(config.model)
    assert str(driver.value) == str(replica.value) == message
    assert not marker.exists()  # never unpickled


def test_pickled_weights_beside_safetensors_are_left_alone(hf_copy, copy):
    for path in (hf_copy, copy):
        (path / "pytorch_model.bin").write_bytes(b"not even a pickle: never read")
        check_model(PipelineConfig(model=ModelConfig(path=str(path))))


def test_the_loader_refuses_pickled_weights_with_the_same_message(copy):
    info = read_checkpoint_info(copy)  # read while the safetensors were there
    replace_with_pickles(copy, 1)
    with pytest.raises(ModelLoadError, match=r"has only pytorch_model\*\.bin weights; convert them to safetensors"):
        load_model(info, torch.float32, "cpu", "sdpa", image_token_id=536)
