"""Models on S3 are staged once per node (a file lock across concurrent actors), then loaded from disk."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from internvl_batch.config import GenerationConfig, ModelConfig, PipelineConfig, StorageConfig
from internvl_batch.errors import ModelLoadError
from internvl_batch.generation.predictor import GenerationRequest, Predictor
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.job import check_model
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


@pytest.mark.parametrize(
    "escape, lands",  # the key below the model's prefix, and where joining it under the staging directory lands
    [("../../x/escape.json", "cache/x/escape.json"), ("../../../outside/escape.json", "outside/escape.json")],
)
@pytest.mark.parametrize("weights", [True, False])
def test_a_key_that_climbs_out_of_the_prefix_fails_the_staging(
    s3, bucket, s3_endpoint, tiny_checkpoint, tmp_path, escape, lands, weights
):
    uri = f"s3://{bucket}/models/tiny"
    upload_checkpoint(s3, tiny_checkpoint, uri)
    key = f"{bucket}/models/tiny/{escape}"
    s3.pipe_file(key, b'{"written": "outside the model directory"}')  # raw put: the key keeps its '..'
    s3.invalidate_cache()
    assert key in s3.find(f"{bucket}/models/tiny")  # listed as written, '..' and all
    cache = tmp_path / "cache"  # the staging directory is cache/models/.<name>-*/: `lands` is relative to tmp_path
    with pytest.raises(ModelLoadError) as raised:
        resolve_model_path(uri, str(cache), weights=weights, storage=StorageConfig(endpoint_url=s3_endpoint))
    assert str(raised.value) == (
        f"model {uri}: refusing to stage object s3://{key}: its path under the prefix, {escape!r}, has a '..' "
        "component and could leave the model's directory; nothing was staged"
    )
    assert not (tmp_path / lands).exists()
    written = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.suffix for p in written] == [".lock"], written  # the file lock only: no model, no half-staged copy
    assert not list((cache / "models").glob(".*"))


def test_a_model_with_only_pickled_weights_fails_the_drivers_check(s3, bucket, s3_endpoint, tiny_checkpoint, tmp_path):
    uri = f"s3://{bucket}/models/pickled"
    for file in tiny_checkpoint.iterdir():
        if not file.name.startswith("model"):  # configs and tokenizer, no safetensors weights
            s3.put_file(str(file), f"{uri}/{file.name}")
    s3.pipe_file(f"{uri}/pytorch_model.bin", b"a pickle: never fetched, never loaded")
    storage = StorageConfig(endpoint_url=s3_endpoint)
    message = f"{uri} has only pytorch_model*.bin weights; convert them to safetensors"
    with pytest.raises(ModelLoadError) as driver:  # the driver stages configs only
        check_model(PipelineConfig(model=ModelConfig(path=uri, cache_dir=str(tmp_path)), storage=storage))
    with pytest.raises(ModelLoadError) as replica:  # a replica stages the weights too
        Predictor(ModelConfig(path=uri, cache_dir=str(tmp_path)), storage=storage)
    assert str(driver.value) == str(replica.value) == message
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"]
