"""Multi-GPU replicas, structurally: for every family member's real architecture (meta device, no weights)
and k in {1, 2, 4, 8}, the model card's split in native module names; and `plan`'s memory figures."""

import math

import pytest

from internvl_batch.cli import main
from internvl_batch.model.device_map import GPU0_MODULES, covering_entries, layers_per_gpu, split_model
from internvl_batch.model.family import FAMILY
from internvl_batch.model.plan import meta_model_for, plan_replica

pytestmark = pytest.mark.slow  # builds seven architectures on the meta device (~10 s)


@pytest.fixture(scope="module")
def family_models():
    return {name: meta_model_for(f"OpenGVLab/{name}")[1] for name in FAMILY}


def model_card_layers(num_layers, world_size):
    """The model card's split_model loop, transcribed: which GPU each LLM layer lands on."""
    per_gpu = math.ceil(num_layers / (world_size - 0.5))
    counts = [per_gpu] * world_size
    counts[0] = math.ceil(counts[0] * 0.5)
    placed, layer = {}, 0
    for gpu, count in enumerate(counts):
        for _ in range(count):
            placed[layer] = gpu
            layer += 1
    placed = {k: v for k, v in placed.items() if k < num_layers}
    placed[num_layers - 1] = 0
    return placed


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
@pytest.mark.parametrize("name", list(FAMILY))
def test_map_covers_every_parameter_once_as_the_model_card_says(family_models, name, gpus):
    model = family_models[name]
    layers = model.config.text_config.num_hidden_layers
    device_map = split_model(layers, gpus)
    for param_name, _ in model.named_parameters():
        assert len(covering_entries(param_name, device_map)) == 1, param_name
    for buffer_name, _ in model.named_buffers():
        assert len(covering_entries(buffer_name, device_map)) == 1, buffer_name
    for module in GPU0_MODULES:
        assert device_map[module] == 0
    expected = model_card_layers(layers, gpus)
    assert {i: device_map[f"model.language_model.layers.{i}"] for i in range(layers)} == expected
    assert device_map[f"model.language_model.layers.{layers - 1}"] == 0
    assert set(device_map.values()) <= set(range(gpus))


def test_layer_counts_match_the_published_rule():
    assert layers_per_gpu(80, 8) == [6, 11, 11, 11, 11, 11, 11, 11]
    assert layers_per_gpu(64, 4) == [10, 19, 19, 19]
    assert layers_per_gpu(24, 1) == [24]


def test_plan_figures():
    plan = plan_replica("OpenGVLab/InternVL2_5-78B", 4, 80)
    assert plan.fits and 20 <= plan.max_batch_rows <= 60
    assert 140 < sum(g.weights_gb for g in plan.per_gpu) < 150  # ~78B parameters in bf16
    assert not plan_replica("OpenGVLab/InternVL2_5-78B", 2, 80).fits
    small = plan_replica("OpenGVLab/InternVL2_5-4B", 1, 80)
    assert 6 < small.per_gpu[0].weights_gb < 8 and small.max_batch_rows > plan.max_batch_rows


def test_plan_cli(capsys, tiny_internlm2_6b_checkpoint):
    assert main(["plan", "OpenGVLab/InternVL2_5-38B", "--gpus", "2", "--gpu-mem", "80"]) == 0
    out = capsys.readouterr().out
    assert "InternVL2_5-38B on 2 x 80 GiB" in out and "largest batch that fits" in out
    assert main(["plan", "OpenGVLab/InternVL2_5-78B", "--gpus", "1"]) == 1
    assert "does NOT fit" in capsys.readouterr().out
    assert main(["plan", str(tiny_internlm2_6b_checkpoint), "--gpus", "2"]) == 0
    assert main(["plan", "OpenGVLab/NotAModel"]) == 2


def test_shipped_configs_follow_the_plan(family_models):
    from pathlib import Path

    import torch

    from internvl_batch.config_loader import load_config
    from internvl_batch.generation.auto_batch import resolve_limits
    from internvl_batch.generation.placement import replica_device_map

    repo = Path(__file__).resolve().parents[3]
    for size in ("1b", "2b", "4b", "8b", "26b", "38b", "78b"):
        config = load_config(repo / "configs" / f"internvl2_5-{size}.yaml")
        gpus = config.model.gpus_per_replica
        plan = plan_replica(config.model.path, gpus, 80, max_new_tokens=config.generation.max_new_tokens)
        assert plan.fits, size
        if config.batching.max_batch_rows != "auto":
            assert config.batching.max_batch_rows <= plan.max_batch_rows, size
        if config.batching.max_batch_tokens != "auto":
            assert config.batching.max_batch_tokens <= plan.max_batch_rows * plan.tokens_per_row, size
            continue
        # auto: what a replica finds free on 80 GB GPUs once its weights are loaded holds the rows plan counts
        model = family_models[config.model.path.split("/")[-1]]
        device_map = replica_device_map(model.config.text_config.num_hidden_layers, gpus, torch.device("cuda"), gpus)
        free = [round((80 - g.weights_gb) * 2**30) for g in plan.per_gpu]
        _, tokens = resolve_limits(
            config.batching, model, torch.device("cuda"), torch.bfloat16, device_map, free_bytes=free
        )
        # plan keeps back 10% of each whole GPU, the replica 10% of what its weights leave free: it fits a few
        # rows more where the weights take much of a GPU (26B: 48 of 80 GB)
        margin = max(0.1 * g.weights_gb / g.per_row_gb for g in plan.per_gpu)
        assert plan.max_batch_rows <= tokens // plan.tokens_per_row <= plan.max_batch_rows + margin + 1, size


def test_plan_budgets_the_embeddings_on_gpu_0():
    # GPU 0 is the replica's main device: it holds every row's prefill embeddings (~3 copies during generate)
    # besides its layers' KV cache; the other GPUs hold only their layers'.
    _, meta = meta_model_for("OpenGVLab/InternVL2_5-78B")
    text = meta.config.text_config
    plan = plan_replica("OpenGVLab/InternVL2_5-78B", 4, 80)
    kv_per_layer = (
        plan.tokens_per_row * 2 * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads) * 2
    )
    g0, g3 = plan.per_gpu[0], plan.per_gpu[3]
    embeddings = (g0.per_row_gb - g3.per_row_gb) * 2**30 - (g0.llm_layers - g3.llm_layers) * kv_per_layer
    assert embeddings == pytest.approx(3 * plan.tokens_per_row * text.hidden_size * 2, rel=1e-6)
