"""Object keys are not paths: a key staged from object storage must be a plain relative path under the model's
prefix (`staging.relative_key`), or staging is refused, naming the key."""

from pathlib import PurePosixPath

import pytest

from internvl_batch.errors import ModelLoadError
from internvl_batch.model.checkpoint import is_pickled_weight
from internvl_batch.model.staging import relative_key

URI, PREFIX = "s3://bkt/models/tiny", "bkt/models/tiny"
CLIMBS = "has a '..' component and could leave the model's directory"


@pytest.mark.parametrize("prefix", [PREFIX, PREFIX + "/"])
@pytest.mark.parametrize(
    "key, rel",
    [("config.json", "config.json"), ("tokenizer/vocab.json", "tokenizer/vocab.json"), ("a..b.json", "a..b.json")],
)
def test_plain_keys_stage_to_their_path_under_the_prefix(prefix, key, rel):
    assert relative_key(f"{PREFIX}/{key}", prefix, URI) == PurePosixPath(rel)


@pytest.mark.parametrize(
    "file, reason",
    [
        (f"{PREFIX}/../../x/escape.json", "its path under the prefix, '../../x/escape.json', " + CLIMBS),
        (f"{PREFIX}/sub/../../../x.json", "its path under the prefix, 'sub/../../../x.json', " + CLIMBS),
        (f"{PREFIX}/..", "its path under the prefix, '..', " + CLIMBS),
        (f"{PREFIX}//etc/x.json", "its path under the prefix, '/etc/x.json', is absolute"),
        (f"{PREFIX}/a//config.json", "its path under the prefix, 'a//config.json', has an empty or '.' component"),
        (f"{PREFIX}/./config.json", "its path under the prefix, './config.json', has an empty or '.' component"),
        (f"{PREFIX}/sub/", "its path under the prefix, 'sub/', has an empty or '.' component"),
        (PREFIX, "it is not a file under the model's prefix"),  # the prefix itself, an object
        (f"{PREFIX}/", "it is not a file under the model's prefix"),
        ("bkt/models/tiny-other/config.json", "it is not a file under the model's prefix"),
    ],
)
def test_keys_that_are_not_plain_paths_are_refused_by_name(file, reason):
    with pytest.raises(ModelLoadError) as raised:
        relative_key(file, PREFIX, URI)
    assert str(raised.value) == f"model {URI}: refusing to stage object s3://{file}: {reason}; nothing was staged"


@pytest.mark.parametrize(
    "name, pickled",
    [
        ("pytorch_model.bin", True),
        ("bkt/m/pytorch_model-00001-of-00002.bin", True),
        ("pytorch_model.bin.index.json", False),
        ("model.safetensors", False),
        ("training_args.bin", False),
    ],
)
def test_pickled_weight_names(name, pickled):
    assert is_pickled_weight(name) is pickled
