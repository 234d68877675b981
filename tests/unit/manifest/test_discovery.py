"""What a pattern in `input.manifests` stands for: a Hugging Face Hub repository's root, WebDataset brace ranges
(shards written by webdataset's own ShardWriter), img2dataset's output folder, and a folder with no manifest."""

import json
import logging

import datasets
import pytest
import webdataset as wds

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.manifest.discover import brace_expand
from internvl_batch.manifest.files import expand_manifests
from tests.unit.manifest.reading import photo, read_rows


def read(manifests, **input_options):
    return read_rows(manifests, **input_options)[0]


def split(name: str, rows: int) -> datasets.Dataset:
    data = {
        "uid": [f"{name}{i}" for i in range(rows)],
        "image": [{"bytes": photo(i), "path": None} for i in range(rows)],
    }
    return datasets.Dataset.from_dict(data).cast_column("image", datasets.Image())


HUB_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---
# A dataset card
"""


@pytest.mark.parametrize("layout", ["flat", "per_split"])
def test_a_hub_repository_root_stands_for_its_data_folder(tmp_path, layout, caplog):
    # What `datasets` push_to_hub uploads (and snapshot_download brings back): README.md at the root, Parquet
    # shards written by datasets' to_parquet below data/ (`data/train-00000-of-00002.parquet`, or per split).
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / "README.md").write_text(HUB_README)
    (root / ".gitattributes").write_text("*.parquet filter=lfs\n")
    train = split("train", 4)
    shards = [("train", 0, 2, train.shard(2, 0)), ("train", 1, 2, train.shard(2, 1)), ("test", 0, 1, split("test", 1))]
    for name, index, count, dataset in shards:
        if layout == "flat":
            path = root / "data" / f"{name}-{index:05d}-of-{count:05d}.parquet"
        else:
            path = root / "data" / name / f"{index:05d}.parquet"
        path.parent.mkdir(exist_ok=True)
        dataset.to_parquet(str(path))
    caplog.set_level(logging.INFO, logger="internvl_batch.manifest")
    rows = read([root], id_column="uid")
    assert sorted(r["id"] for r in rows) == ["test0", "train0", "train1", "train2", "train3"]
    assert "a Hugging Face dataset repository: reading 3 files under data/ (splits: test, train)" in caplog.text
    assert all(r["error"] is None and r["media_data"] for r in rows)
    assert all("/data/" in r["source"] for r in rows)


def test_brace_ranges_expand_to_webdataset_shards(tmp_path):
    pattern = str(tmp_path / "shard-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=2, verbose=0) as sink:
        for i in range(5):
            sink.write({"__key__": f"s{i:03d}", "jpg": photo(i), "json": {"n": i}})
    rows = read([tmp_path / "shard-{000000..000002}.tar"], passthrough_columns=["n"])
    assert [r["id"] for r in rows] == ["s000", "s001", "s002", "s003", "s004"]
    assert rows[4]["media"] == [f"{tmp_path}/shard-000002.tar:1#1:s004.jpg"]
    files = expand_manifests([str(tmp_path / "shard-{000001..000002}.tar")], StorageConfig())
    assert [f.uri.rsplit("/", 1)[1] for f in files] == ["shard-000001.tar", "shard-000002.tar"]
    with pytest.raises(ConfigError) as info:
        read([tmp_path / "shard-{000000..000004}.tar"])
    assert str(info.value) == (
        f"manifest {tmp_path}/shard-{{000000..000004}}.tar: 2 of the 5 files it names do not exist "
        "(shard-000003.tar, shard-000004.tar); fix the range or remove the missing shards from it"
    )


@pytest.mark.parametrize(
    "pattern",
    [
        "shard-{000000..000009}.tar",
        "s3://b/{train,test}-{0..3}.parquet",
        "x{9..11}y",
        "x{-2..2}",
        "a{03..1}b",
        "plain.tar",
        "{}braces{x}.tar",
    ],
)
def test_brace_expansion_agrees_with_braceexpand(pattern):
    braceexpand = pytest.importorskip("braceexpand")  # what webdataset expands shard patterns with
    assert brace_expand(pattern) == list(braceexpand.braceexpand(pattern))


def test_img2dataset_style_folder_reads_the_shards_not_their_metadata(tmp_path):
    # The real img2dataset: tests/integration/test_interop_inputs.py. Here its layout: each tar shard has a
    # metadata Parquet and a stats JSON of the same stem beside it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    with wds.TarWriter(str(tmp_path / "00000.tar")) as sink:
        sink.write({"__key__": "000000000", "jpg": photo(0), "txt": "a caption", "json": {"key": "000000000"}})
    pq.write_table(
        pa.table({"key": ["000000000", "000000001"], "status": ["success", "failed"]}), tmp_path / "00000.parquet"
    )
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 2, "successes": 1}))
    rows = read([tmp_path], passthrough_columns=["txt"])
    assert [(r["id"], r["error"]) for r in rows] == [("000000000", None)]


def test_a_folder_without_manifests_says_what_it_holds(tmp_path):
    for name in ("a.txt", "b.txt", "c.png", "notes.json"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "images").mkdir()
    with pytest.raises(ConfigError) as info:
        read([tmp_path])
    message = str(info.value)
    assert message.startswith(
        f"manifest {tmp_path}: the folder holds no manifest files: 2 .txt, 1 .json, 1 .png, 1 folder "
        "(e.g. a.txt, b.txt, c.png, images/, notes.json); manifests end in .parquet, .arrow"
    )
    assert "`.json` files in a folder are taken as metadata" in message and "no such file" not in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="the folder holds no manifest files: it is empty"):
        read([tmp_path / "empty"])


def test_hub_folder_without_data_files_is_described(tmp_path):
    (tmp_path / "README.md").write_text(HUB_README)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"holds no manifest files: 1 \.md, 1 folder \(e.g. README.md, data/\)"):
        read([tmp_path])


def test_a_folder_mixing_formats_reads_each_file_by_its_suffix(tmp_path):
    with wds.TarWriter(str(tmp_path / "b.tar")) as sink:
        sink.write({"__key__": "t1", "png": photo(1)})
    (tmp_path / "a.jsonl").write_text('{"id": "j1", "image": "x.jpg"}\n')
    assert [r["id"] for r in read([tmp_path])] == ["j1", "t1"]
