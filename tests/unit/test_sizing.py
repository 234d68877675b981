"""Rows per call to a model replica (`resources.gpu_batch_size`): auto follows where the replicas run."""

import pytest

from internvl_batch.config import ResourcesConfig
from internvl_batch.config_loader import load_config
from internvl_batch.errors import ConfigError
from internvl_batch.pipeline.sizing import replica_batch_size


def test_auto_is_256_rows_on_gpus_and_32_on_the_cpu():
    auto = ResourcesConfig()
    assert auto.gpu_batch_size == "auto"
    assert replica_batch_size(auto, num_gpus=1) == 256
    assert replica_batch_size(auto, num_gpus=0.5) == 256  # a fraction of a GPU is still a GPU replica
    assert replica_batch_size(auto, num_gpus=4, model_device="cuda") == 256
    assert replica_batch_size(auto, num_gpus=0) == 32
    assert replica_batch_size(auto, num_gpus=1, model_device="cpu") == 32  # model.device=cpu: runs on the CPU


def test_a_number_is_kept_wherever_the_replicas_run():
    assert replica_batch_size(ResourcesConfig(gpu_batch_size=8), num_gpus=1) == 8
    assert replica_batch_size(ResourcesConfig(gpu_batch_size=8), num_gpus=0) == 8


def test_the_config_takes_auto_or_a_positive_count(tmp_path):
    base = {"input": {"manifests": "m.jsonl"}, "output": {"path": str(tmp_path)}, "model": {"path": "tiny"}}
    assert load_config(None, ["resources.gpu_batch_size=auto"], base=base).resources.gpu_batch_size == "auto"
    assert load_config(None, ["resources.gpu_batch_size=64"], base=base).resources.gpu_batch_size == 64
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="gpu_batch_size"):
            load_config(None, [f"resources.gpu_batch_size={bad}"], base=base)
