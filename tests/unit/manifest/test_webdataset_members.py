"""WebDataset members beside the image, in shards written by webdataset's own TarWriter: `.cls` (a class label,
written as decimal text) as an int column, `.txt` and the other text members as text, `.json` fields."""

import webdataset as wds

from internvl_batch.config_loader import load_config
from internvl_batch.manifest.local import read_manifests
from internvl_batch.passthrough import carried
from tests.media import encode, make_photo


def photo(seed: int) -> bytes:
    return encode(make_photo(96, 64, seed=seed), "JPEG")


def read(manifest, passthrough, fetch=None, **input_options):
    config = load_config(
        None,
        base={
            "input": {"manifests": str(manifest), "passthrough_columns": passthrough, **input_options},
            "output": {"path": "unused"},
            "model": {"path": "tiny"},
            "fetch": fetch or {},
        },
    )
    table, _, _ = read_manifests(config)
    return {row["id"]: row for row in table.to_pylist()}


def test_cls_txt_json_and_other_text_members(tmp_path):
    shard = tmp_path / "shard-000000.tar"
    with wds.TarWriter(str(shard)) as sink:
        sink.write({"__key__": "a", "jpg": photo(0), "cls": 7, "txt": "a red car", "json": {"source": "cam1"}})
        sink.write({"__key__": "b", "jpg": photo(1), "cls": 0, "json": {"source": "cam2", "cls": 99}})
        sink.write({"__key__": "c", "jpg": photo(2), "cls": "not a number", "transcript": "hello", "index": 12})
        sink.write({"__key__": "d", "jpg": photo(3)})  # no label: null
    rows = read(shard, ["cls", "txt", "source", "transcript", "index"])
    assert [rows[k][carried("cls")] for k in "abcd"] == ["7", "0", '"not a number"', None]  # mixed: JSON text
    assert rows["a"][carried("txt")] == "a red car" and rows["a"][carried("source")] == "cam1"
    assert rows["b"][carried("source")] == "cam2"  # the .cls member, not the JSON's `cls`, is the label
    assert rows["c"][carried("transcript")] == "hello" and rows["c"][carried("index")] == 12
    assert all(row["error"] is None and row["media_data"] for row in rows.values())


def test_integer_labels_keep_their_type(tmp_path):
    shard = tmp_path / "labels.tar"
    with wds.TarWriter(str(shard)) as sink:
        for i in range(4):
            sink.write({"__key__": f"{i:04d}", "png": photo(i), "cls": i % 3})
    rows = read(shard, ["cls"])
    assert [rows[f"{i:04d}"][carried("cls")] for i in range(4)] == [0, 1, 2, 0]


def test_text_members_are_bounded_like_the_others(tmp_path):
    shard = tmp_path / "big.tar"
    with wds.TarWriter(str(shard)) as sink:
        sink.write({"__key__": "k", "jpg": photo(0), "txt": "x" * 50_000})
    rows = read(shard, ["txt"], fetch={"max_bytes": 20_000})
    assert rows["k"]["error"] == (
        "manifest: ManifestError: sample k: member k.txt is 50000 bytes, over fetch.max_bytes=20000 (not read)"
    )
