"""Config: YAML + overrides load into the typed config; every mistake is one line naming the field."""

from pathlib import Path

import pytest

from internvl_batch.config import JobConfig
from internvl_batch.config_loader import load_config
from internvl_batch.demo import demo_config
from internvl_batch.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"input": {"manifests": "m.jsonl"}, "output": {"path": "out"}, "model": {"path": "tiny"}}


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    config = load_config(REPO / "configs" / name)
    assert isinstance(config, JobConfig)


def test_demo_yaml_matches_embedded_demo():
    from_yaml = load_config(REPO / "configs" / "demo.yaml")
    embedded = load_config(None, base=demo_config())
    assert from_yaml.model_dump(exclude={"input", "output"}) == embedded.model_dump(exclude={"input", "output"})
    assert Path(embedded.input.manifests[0]).resolve() == Path(from_yaml.input.manifests[0]).resolve()
    assert Path(from_yaml.output.path).resolve() == (REPO / embedded.output.path).resolve()


def test_relative_paths_in_a_config_file_are_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "jobs" / "ckpt").mkdir(parents=True)
    path = write(
        tmp_path / "jobs",
        "input: {manifests: [m/a.jsonl, 's3://b/m.jsonl']}\noutput: {path: out}\nmodel: {path: ckpt}\n",
    )
    monkeypatch.chdir("/")
    config = load_config(path, ["output.path=cli-out"])
    assert config.input.manifests == [str(tmp_path / "jobs" / "m/a.jsonl"), "s3://b/m.jsonl"]
    assert config.model.path == str(tmp_path / "jobs" / "ckpt") and config.output.path == "cli-out"  # --set: as typed
    hub = load_config(
        write(tmp_path, "input: {manifests: a.jsonl}\noutput: {path: o}\nmodel: {path: OpenGVLab/InternVL2_5-4B}\n")
    )
    assert hub.model.path == "OpenGVLab/InternVL2_5-4B"


def test_overrides_are_typed(tmp_path):
    path = write(tmp_path, "input: {manifests: a.jsonl}\noutput: {path: o}\nmodel: {path: tiny}\n")
    config = load_config(
        path,
        [
            "generation.max_new_tokens=64",
            "resources.gpu_replicas=[1, 4]",
            "preprocess.exif_transpose=false",
            "task.name=ocr",
        ],
    )
    assert config.generation.max_new_tokens == 64
    assert config.resources.gpu_replicas == (1, 4)
    assert config.preprocess.exif_transpose is False
    assert config.task.name == "ocr"
    assert config.input.manifests == [str(tmp_path / "a.jsonl")]  # relative to the config file


def test_int_means_fixed_pool():
    assert load_config(None, ["resources.cpu_actors=3"], base=MINIMAL).resources.cpu_actors == (3, 3)


@pytest.mark.parametrize(
    "override,message",
    [
        ("generation.max_new_tokenz=5", "generation.max_new_tokenz: unknown key"),
        ("generation.max_new_tokens=many", "generation.max_new_tokens: Input should be a valid integer"),
        ("resources.gpu_replicas=[4, 1]", "resources.gpu_replicas: need 1 <= min <= max"),
        ("storage.secret_access_key=abc", "storage.secret_access_key: unknown key"),
        ("input.format=xml", "input.format: must be auto (by extension) or one of: parquet, arrow, jsonl, csv,"),
    ],
)
def test_errors_name_the_field_on_one_line(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override], base=MINIMAL)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_required_section():
    with pytest.raises(ConfigError, match="output: Field required"):
        load_config(None, base={"input": {"manifests": "m"}, "model": {"path": "tiny"}})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_malformed_yaml_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "input: [unclosed\n"))
    assert "\n" not in str(info.value)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["no-equals-sign"], base=MINIMAL)


def test_every_field_is_described():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"
            if hasattr(field.annotation, "model_fields"):
                walk(field.annotation)

    walk(JobConfig)
