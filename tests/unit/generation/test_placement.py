"""A replica uses exactly the devices Ray gave it, loads straight onto them, and decodes with our settings
only (never the checkpoint's generation defaults)."""

import json
import shutil
import sys

import pytest
import torch

from internvl_batch.config import BatchingConfig, GenerationConfig, ModelConfig
from internvl_batch.config_loader import load_config
from internvl_batch.errors import ConfigError, ModelLoadError
from internvl_batch.generation.decoding import decoding_config
from internvl_batch.generation.placement import replica_device_map, resolve_attention, resolve_device
from internvl_batch.generation.predictor import GenerationRequest, Predictor
from internvl_batch.model.device_map import EMBEDDINGS_MODULE, split_model
from internvl_batch.model.loader import dispatch_arguments
from internvl_batch.pipeline.chain import replica_env
from internvl_batch.pipeline.dataset import replica_gpus


def test_a_replica_without_a_reserved_gpu_runs_on_the_cpu_even_where_cuda_is_visible():
    # Ray leaves CUDA_VISIBLE_DEVICES unset for actors with num_gpus=0: torch would see the node's GPUs.
    assert resolve_device("auto", reserved_gpus=0, cuda_available=True) == torch.device("cpu")
    assert resolve_device("auto", reserved_gpus=1, cuda_available=True) == torch.device("cuda")
    assert resolve_device("auto", reserved_gpus=None, cuda_available=True) == torch.device("cuda")  # outside Ray
    assert resolve_device("auto", reserved_gpus=1, cuda_available=False) == torch.device("cpu")
    assert resolve_device("cpu", reserved_gpus=0, cuda_available=True) == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="reserved no GPU"):
        resolve_device("cuda:0", reserved_gpus=0, cuda_available=True)


CUDA = torch.device("cuda")
PLACEMENT_LOG = "internvl_batch.generation.placement"


@pytest.mark.parametrize("capability", [(7, 5), (8, 0), (9, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("flash_available", [True, False])
def test_auto_attention_is_flash_only_where_flash_attn_runs(capability, dtype, flash_available, caplog):
    # flash-attn 2 has kernels for float16/bfloat16 on sm80 and newer; elsewhere it fails on the first batch
    expected = flash_available and capability >= (8, 0) and dtype != torch.float32
    with caplog.at_level("INFO", logger=PLACEMENT_LOG):
        chosen = resolve_attention("auto", CUDA, dtype, capability=capability, flash_available=flash_available)
    assert chosen == ("flash_attention_2" if expected else "sdpa")
    lines = [r.getMessage() for r in caplog.records if r.name == PLACEMENT_LOG]
    if expected:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].endswith(": using sdpa attention"), lines


@pytest.mark.parametrize(
    "dtype, capability, flash_available, reason",
    [
        (torch.float32, (9, 0), True, "flash-attn needs float16/bfloat16; model.dtype is float32"),
        (torch.float64, (9, 0), True, "flash-attn needs float16/bfloat16; model.dtype is float64"),
        (torch.bfloat16, (7, 5), True, "flash-attn needs compute capability 8.0 or newer; cuda has 7.5"),
        (torch.bfloat16, (9, 0), False, "flash-attn is not installed"),
    ],
)
def test_why_auto_attention_falls_back_to_sdpa_and_an_explicit_flash_choice_fails(
    dtype, capability, flash_available, reason, caplog
):
    kwargs = {"capability": capability, "flash_available": flash_available}
    with caplog.at_level("INFO", logger=PLACEMENT_LOG):
        assert resolve_attention("auto", CUDA, dtype, **kwargs) == "sdpa"
    assert [r.getMessage() for r in caplog.records if r.name == PLACEMENT_LOG][0].startswith(reason)
    with pytest.raises(ModelLoadError, match=f"model.attn_implementation=flash_attention_2 but {reason}") as raised:
        resolve_attention("flash_attention_2", CUDA, dtype, **kwargs)
    assert "\n" not in str(raised.value)


def test_attention_without_a_dtype_and_on_the_cpu(caplog):
    # the two-argument call checks the device only
    assert resolve_attention("auto", CUDA, capability=(8, 0), flash_available=True) == "flash_attention_2"
    assert resolve_attention("flash_attention_2", CUDA, capability=(8, 6), flash_available=True) == "flash_attention_2"
    with caplog.at_level("INFO", logger=PLACEMENT_LOG):
        assert resolve_attention("auto", torch.device("cpu"), torch.float32, flash_available=True) == "sdpa"
    assert not [r for r in caplog.records if r.name == PLACEMENT_LOG]  # sdpa is the CPU's only choice: no warning
    with pytest.raises(ModelLoadError, match="needs a CUDA device"):
        resolve_attention("flash_attention_2", torch.device("cpu"), torch.bfloat16, flash_available=True)
    for name in ("sdpa", "eager"):  # taken as given, whatever the device
        assert resolve_attention(name, CUDA, torch.float32, capability=(7, 0), flash_available=False) == name


def test_attention_probes_the_device_and_flash_attn_by_default(monkeypatch):
    asked = []

    def capability_of(device):
        asked.append(device)
        return (7, 5)

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability_of)
    assert resolve_attention("auto", torch.device("cuda:1"), torch.bfloat16, flash_available=True) == "sdpa"
    assert asked == [torch.device("cuda:1")]
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # `import flash_attn` raises ImportError
    with pytest.raises(ModelLoadError, match="flash-attn is not installed"):
        resolve_attention("flash_attention_2", CUDA, torch.bfloat16, capability=(9, 0))


def test_replicas_that_reserve_no_gpu_do_not_see_any():
    assert replica_env(0, environ={}) == {
        "CUDA_VISIBLE_DEVICES": "",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    }
    assert replica_env(1, environ={}) == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    # the job's own allocator settings win
    assert replica_env(2, environ={"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}) == {}
    assert replica_env(2, environ={"PYTORCH_ALLOC_CONF": "expandable_segments:False"}) == {}


def test_an_explicit_cuda_device_without_reserved_gpus_fails_fast(tmp_path):
    config = load_config(
        None,
        base={
            "input": {"manifests": "m.jsonl"},
            "output": {"path": str(tmp_path)},
            "model": {"path": "tiny", "device": "cuda"},
            "resources": {"accelerator": "cpu"},
        },
    )
    with pytest.raises(ConfigError, match="model.device=cuda but model replicas reserve no GPU"):
        replica_gpus(config)


@pytest.mark.parametrize("gpus", [2, 3, 4, 8])
def test_multi_gpu_replicas_keep_inputs_on_the_embeddings_gpu(gpus):
    device_map = replica_device_map(80, gpus, torch.device("cuda"), visible=gpus)
    arguments = dispatch_arguments(device_map)
    assert arguments["main_device"] == device_map[EMBEDDINGS_MODULE] == "cuda:0"
    assert device_map["model.vision_tower"] == "cuda:0" and split_model(80, gpus)[EMBEDDINGS_MODULE] == 0
    # without it accelerate takes `list(set(devices))[0]`, which depends on the process's string hashing
    with pytest.raises(ModelLoadError, match="sees 1 GPUs"):
        replica_device_map(80, gpus, torch.device("cuda"), visible=1)


def test_native_checkpoints_load_straight_to_the_device(tiny_hf_checkpoint, monkeypatch):
    from transformers import InternVLForConditionalGeneration

    from internvl_batch.model.checkpoint import read_checkpoint_info
    from internvl_batch.model.loader import load_model

    moves = []
    original = torch.nn.Module.to

    def recording_to(self, *args, **kwargs):
        if isinstance(self, InternVLForConditionalGeneration):
            moves.append((args, kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    model = load_model(read_checkpoint_info(tiny_hf_checkpoint), torch.float32, torch.device("cpu"))
    assert moves == [], "the whole model was built in host memory, then moved to its device"
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}


HOSTILE_DEFAULTS = {  # what a checkpoint's generation_config.json may ship; none of it may reach our decoding
    "do_sample": True,
    "temperature": 0.05,
    "top_k": 3,
    "min_p": 0.2,
    "repetition_penalty": 50.0,
    "no_repeat_ngram_size": 1,
    "suppress_tokens": list(range(0, 200)),
    "min_length": 3,
    "num_beams": 3,
    "length_penalty": -4.0,
    "bad_words_ids": [[5], [7]],
}


def test_checkpoint_generation_defaults_do_not_leak_into_decoding(tiny_hf_checkpoint, tmp_path):
    hostile = tmp_path / "hostile"
    shutil.copytree(tiny_hf_checkpoint, hostile)
    (hostile / "generation_config.json").write_text(json.dumps(HOSTILE_DEFAULTS))
    outputs = []
    for path in (tiny_hf_checkpoint, hostile):
        predictor = Predictor(ModelConfig(path=str(path)), GenerationConfig(max_new_tokens=12), BatchingConfig())
        prompts = [predictor.prompts.build(q, []).input_ids for q in ("Say something.", "Count to ten.", "Hi")]
        outputs.append([r.output_ids for r in predictor.generate([GenerationRequest(ids, None) for ids in prompts])])
    assert outputs[1] == outputs[0]


def test_every_decoding_control_is_set():
    config = decoding_config(GenerationConfig(), 16, stop_token_id=7, pad_token_id=0)
    for field in (
        "do_sample",
        "num_beams",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "length_penalty",
        "typical_p",
        "epsilon_cutoff",
        "eta_cutoff",
        "temperature",
        "top_k",
        "top_p",
        "min_new_tokens",
        "use_cache",
        "renormalize_logits",
        "guidance_scale",
        "num_return_sequences",
    ):
        assert getattr(config, field) is not None, field
    assert (config.do_sample, config.num_beams, config.repetition_penalty, config.no_repeat_ngram_size) == (
        False,
        1,
        1.0,
        0,
    )
    sampled = decoding_config(GenerationConfig(do_sample=True, temperature=0.7, top_k=0), 16, 7, 0)
    assert (sampled.do_sample, sampled.temperature, sampled.top_k) == (True, 0.7, 0)
