"""Models on S3 are staged once per node (a file lock across concurrent actors), then loaded from disk."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from internvl_batch.config import GenerationConfig, ModelConfig, StorageConfig
from internvl_batch.generation.predictor import GenerationRequest, Predictor
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.model.locate import resolve_model_path
from tests.integration.fault_proxy import FaultProxy, Rule
from tests.media import encode, make_photo

pytestmark = pytest.mark.integration


def upload_checkpoint(s3, local, uri):
    for file in local.iterdir():
        s3.put_file(str(file), f"{uri}/{file.name}")
    s3.pipe_file(f"{uri}/modeling_internvl_chat.py", b"raise SystemExit('remote code must never be fetched')")


def shard_gets(proxy, uri):
    key = uri.split("://", 1)[1] + "/model-00002-of-00002.safetensors"
    return sum(n for (method, path), n in proxy.hits.items() if method == "GET" and path.endswith(key))


def test_staged_once_per_node_under_concurrency(s3, bucket, s3_endpoint, tiny_checkpoint, tmp_path):
    uri = f"s3://{bucket}/models/tiny-internvl"
    upload_checkpoint(s3, tiny_checkpoint, uri)
    with FaultProxy(s3_endpoint) as proxy:
        proxy.add(Rule(".safetensors", "delay", seconds=0.3))  # keep the first download in flight while others arrive
        storage = StorageConfig(endpoint_url=proxy.url)
        single = resolve_model_path(uri, str(tmp_path / "node-a"), storage=storage)
        once = shard_gets(proxy, uri)
        with ThreadPoolExecutor(4) as pool:
            paths = list(
                pool.map(lambda _: resolve_model_path(uri, str(tmp_path / "node-b"), storage=storage), range(4))
            )
        concurrent = shard_gets(proxy, uri) - once
        again = resolve_model_path(uri, str(tmp_path / "node-b"), storage=storage)
        after = shard_gets(proxy, uri) - once - concurrent
    assert once >= 1 and concurrent == once and after == 0  # four actors, one download; then none
    assert len(set(paths)) == 1 and paths[0] == again
    assert sorted(p.name for p in single.iterdir()) == sorted(p.name for p in paths[0].iterdir())
    assert not (paths[0] / "modeling_internvl_chat.py").exists()
    assert not list((tmp_path / "node-b" / "models").glob(".*"))  # no half-staged leftovers


def test_configs_only_for_preprocessing_and_a_predictor_from_s3(s3, bucket, s3_endpoint, tiny_checkpoint, tmp_path):
    uri = f"s3://{bucket}/models/tiny"
    upload_checkpoint(s3, tiny_checkpoint, uri)
    storage = StorageConfig(endpoint_url=s3_endpoint)
    configs = resolve_model_path(uri, str(tmp_path), weights=False, storage=storage)
    assert (configs / "config.json").exists() and not list(configs.glob("*.safetensors"))
    predictor = Predictor(
        ModelConfig(path=uri, cache_dir=str(tmp_path)), GenerationConfig(max_new_tokens=2), storage=storage
    )
    image = ImagePreprocessor()(encode(make_photo(448, 448), "PNG"))
    result = predictor.generate([GenerationRequest(predictor.prompts.build("Hi", [1]).input_ids, image.tiles)])[0]
    assert result.num_output_tokens == 2
    assert (
        resolve_model_path(uri, str(tmp_path), weights=False, storage=storage) == predictor.info.path
    )  # full copy reused
