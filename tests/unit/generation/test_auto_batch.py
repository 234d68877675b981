"""`batching: auto`: a loaded replica sizes its batches from the memory it finds free, with the same per-token
costs as `internvl-batch plan` (the real 4B architecture on the meta device: no weights, no GPU)."""

import logging

import pytest
import torch

from internvl_batch.config import BatchingConfig
from internvl_batch.generation.auto_batch import (
    llm_layer_counts,
    per_token_bytes,
    resolve_limits,
    vision_workspace_bytes,
)
from internvl_batch.generation.placement import replica_device_map
from internvl_batch.model.device_map import device_of, split_model
from internvl_batch.model.plan import meta_model_for, plan_replica

GIB = 2**30
CUDA = torch.device("cuda")
MODEL_4B = "OpenGVLab/InternVL2_5-4B"


@pytest.fixture(scope="module")
def model_4b():
    return meta_model_for(MODEL_4B)[1]


def weights_per_gpu(model, device_map: dict[str, int] | None, gpus: int = 1) -> list[int]:
    weights = [0] * gpus
    for name, param in model.named_parameters():
        weights[0 if device_map is None else device_of(name, device_map)] += param.numel() * 2
    return weights


def test_numbers_in_the_config_are_kept():
    # the model is only read to resolve an auto token budget on CUDA
    batching = BatchingConfig(max_batch_rows=12, max_batch_tokens=5000)
    assert resolve_limits(batching, None, CUDA, torch.bfloat16, None, free_bytes=[80 * GIB]) == (12, 5000)
    assert resolve_limits(batching, None, torch.device("cpu"), torch.float32, None) == (12, 5000)
    assert resolve_limits(BatchingConfig(max_batch_tokens=999), None, CUDA, torch.bfloat16, None) == (256, 999)
    assert resolve_limits(BatchingConfig(max_batch_rows=5), None, torch.device("cpu"), torch.float32) == (5, 65536)


def test_auto_on_the_cpu():
    assert resolve_limits(BatchingConfig(), None, torch.device("cpu"), torch.float32, None) == (32, 65536)
    # free_bytes only matters on CUDA
    cpu = resolve_limits(BatchingConfig(), None, torch.device("cpu"), torch.float32, None, free_bytes=[1])
    assert cpu == (32, 65536)


@pytest.mark.slow  # builds the 4B architecture on the meta device (~5 s with the imports)
def test_auto_on_one_gpu_is_the_free_memory_over_the_cost_of_a_token(model_4b, caplog):
    text, vision = model_4b.config.text_config, model_4b.config.vision_config
    free = 70 * GIB
    batching = BatchingConfig(vision_chunk_tiles=32)
    with caplog.at_level(logging.INFO, logger="internvl_batch.generation.auto_batch"):
        rows, tokens = resolve_limits(batching, model_4b, CUDA, torch.bfloat16, None, free_bytes=[free])
    # written out from the architecture: KV cache of 36 layers, one layer's MLP activations, 3 embeddings
    head_dim = text.hidden_size // text.num_attention_heads
    per_token = (
        text.num_hidden_layers * 2 * text.num_key_value_heads * head_dim * 2
        + (2 * text.intermediate_size + 4 * text.hidden_size) * 2
        + 3 * text.hidden_size * 2
    )
    workspace = 32 * 1025 * (vision.intermediate_size + 4 * vision.hidden_size) * 2
    assert rows == 256
    assert tokens == int((free * 0.9 - workspace) // per_token)
    assert per_token_bytes(text, [text.num_hidden_layers], 2) == [per_token]
    assert vision_workspace_bytes(vision, 32, 2) == workspace
    # less utilisation, less budget; float32 costs twice as much a token
    assert resolve_limits(batching, model_4b, CUDA, torch.bfloat16, None, 0.5, [free])[1] < tokens
    assert resolve_limits(batching, model_4b, CUDA, torch.float32, None, free_bytes=[free])[1] < tokens // 2 + 1
    line = next(r.getMessage() for r in caplog.records if "batch limits" in r.getMessage())
    assert f"256 rows (auto on cuda), {tokens} tokens (auto: cuda has 70.00 GiB free (given) x 0.9" in line
    # rows given, tokens auto: only the tokens are resolved
    assert resolve_limits(
        BatchingConfig(max_batch_rows=7, vision_chunk_tiles=32), model_4b, CUDA, torch.bfloat16, None, free_bytes=[free]
    ) == (7, tokens)


@pytest.mark.slow
def test_auto_agrees_with_plan_on_an_80_gb_gpu(model_4b):
    # 7-tile rows (a 2 x 3 grid and its thumbnail), a 64-token question, 1024 new tokens
    plan = plan_replica(MODEL_4B, 1, 80, tiles=7, prompt_tokens=64, max_new_tokens=1024)
    free = 80 * GIB - weights_per_gpu(model_4b, None)[0]  # what CUDA reports once the weights are loaded
    _, tokens = resolve_limits(BatchingConfig(), model_4b, CUDA, torch.bfloat16, None, free_bytes=[free])
    rows = tokens // plan.tokens_per_row
    assert plan.tokens_per_row == 7 * 256 + 64 + 1024
    assert 100 <= rows <= 400
    assert rows == pytest.approx(plan.max_batch_rows, rel=0.15)


@pytest.mark.slow
def test_a_replica_on_two_gpus_takes_the_tighter_one(model_4b):
    layers = model_4b.config.text_config.num_hidden_layers
    device_map = replica_device_map(layers, 2, CUDA, visible=2)
    assert llm_layer_counts(device_map, [0, 1]) == llm_layer_counts(split_model(layers, 2), [0, 1])
    batching = BatchingConfig()

    def budget(free):
        return resolve_limits(batching, model_4b, CUDA, torch.bfloat16, device_map, free_bytes=free)[1]

    text, vision = model_4b.config.text_config, model_4b.config.vision_config
    costs = per_token_bytes(text, llm_layer_counts(device_map, [0, 1]), 2)
    workspace = vision_workspace_bytes(vision, batching.vision_chunk_tiles, 2)
    on_gpu = [int((40 * GIB * 0.9 - workspace) // costs[0]), int(40 * GIB * 0.9 // costs[1])]
    assert budget([40 * GIB, 40 * GIB]) == min(on_gpu)
    # a GPU with little free memory bounds the replica, whichever it is
    assert budget([40 * GIB, 2 * GIB]) == int(2 * GIB * 0.9 // costs[1])
    assert budget([2 * GIB, 40 * GIB]) == int((2 * GIB * 0.9 - workspace) // costs[0])
    # and on 2 x 80 GB it agrees with plan too
    weights = weights_per_gpu(model_4b, split_model(layers, 2), 2)
    plan = plan_replica(MODEL_4B, 2, 80, tiles=7, max_new_tokens=1024)
    rows = budget([80 * GIB - w for w in weights]) // plan.tokens_per_row
    assert rows == pytest.approx(plan.max_batch_rows, rel=0.15)
    with pytest.raises(ValueError, match="2 GPUs"):
        budget([40 * GIB])


@pytest.mark.slow
def test_no_room_leaves_one_token_and_says_so(model_4b, caplog):
    with caplog.at_level(logging.WARNING, logger="internvl_batch.generation.auto_batch"):
        limits = resolve_limits(BatchingConfig(), model_4b, CUDA, torch.bfloat16, None, free_bytes=[GIB // 2])
    assert limits == (256, 1)
    assert "leaves no room to generate" in caplog.text
