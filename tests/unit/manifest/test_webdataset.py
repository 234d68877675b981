"""WebDataset tar shards as manifests: one row per sample, streamed; bad samples and broken shards as rows."""

import io
import json
import tarfile

import pytest

from internvl_batch.manifest.formats.webdataset import sample_key
from internvl_batch.manifest.local import read_manifests
from tests.helpers import job_config
from tests.media import encode, make_photo


def shard(samples: list[dict[str, bytes]]) -> bytes:
    """A tar of `{member name: bytes}` samples, in order, as img2dataset writes them."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for sample in samples:
            for name, data in sample.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def photo(seed: int) -> bytes:
    return encode(make_photo(320, 240, seed=seed), "JPEG")


def sample(key: str, seed: int, **fields) -> dict[str, bytes]:
    return {
        f"{key}.jpg": photo(seed),
        f"{key}.json": json.dumps({"key": key, **fields}).encode(),
        f"{key}.txt": f"caption of {key}".encode(),
    }


@pytest.fixture
def shards(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    good = [sample(f"{i:05d}", i, url=f"https://example.com/{i}.jpg", sid=f"S{i}") for i in range(3)]
    (root / "00000.tar").write_bytes(
        shard(
            good
            + [
                {"00003.json": b"{}"},  # no image
                {"00004.jpg": b"these are not JPEG bytes", "00004.json": b'{"sid": "S4"}'},  # a corrupt image member
                {"00005.png": photo(5), "00005.json": b"{not json"},
                {
                    "00006.webp": encode(make_photo(300, 200, seed=6), "WEBP"),
                    "00006.json": b'{"question": "What is it?", "sid": "S6"}',
                },
            ]
        )
    )
    whole = shard([sample(f"1{i:04d}", 10 + i, sid=f"T{i}") for i in range(3)])
    (root / "00001.tar").write_bytes(whole[: len(whole) // 2])  # cut inside its second sample
    return root


def test_sample_keys():
    assert sample_key("00001.jpg") == ("00001", "jpg")
    assert sample_key("part/00001.seg.JPG") == ("part/00001", "seg.jpg")


def test_samples_become_rows(shards, tiny_checkpoint, tmp_path):
    from internvl_batch.stages.prepare import PrepareStage

    config = job_config(
        tiny_checkpoint, tmp_path / "out", input={"manifests": str(shards), "passthrough_columns": ["url", "txt"]}
    )  # a directory of shards
    table, totals, report = read_manifests(config)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert totals.rows == 9
    assert [rows[f"0000{i}"]["error"] for i in range(3)] == [None] * 3
    assert rows["00000"]["in.url"] == "https://example.com/0.jpg" and rows["00000"]["in.txt"] == "caption of 00000"
    assert rows["00000"]["media"] == [f"{shards}/00000.tar:1#1:00000.jpg"] and rows["00000"]["media_data"][0] == photo(
        0
    )
    assert rows["00003"]["error"] == "manifest: ManifestError: sample 00003: no image among its members (json)"
    assert rows["00005"]["error"].startswith("manifest: ManifestError: sample 00005: 00005.json is not valid JSON")
    assert rows["00006"]["question"] == "What is it?" and rows["00006"]["tasks"] == ["vqa"]
    assert rows["10000"]["error"] is None  # the first sample of the cut shard is whole...
    broken = rows["00001.tar:2"]["error"]  # ...then one row says where reading stopped
    assert broken.startswith("manifest: ManifestError: shard 00001.tar is truncated or corrupt after member '1000")
    assert "the samples after it cannot be read" in broken
    prepared = {r["id"]: r for r in PrepareStage.from_config(config).prepare(table).to_pylist()}
    assert prepared["00004"]["error"].startswith("decode: ImageDecodeError: ")
    assert prepared["00000"]["error"] is None and prepared["00006"]["error"] is None
    assert "media_data" not in prepared["00000"]


def test_id_from_a_json_field(shards, tmp_path):
    config = job_config("tiny", tmp_path / "out", input={"manifests": str(shards / "00000.tar"), "id_column": "sid"})
    table, _, _ = read_manifests(config)
    ids = table.column("id").to_pylist()
    assert ids[:3] == ["S0", "S1", "S2"] and "S4" in ids and "S6" in ids
    assert "00003" in ids  # the sample whose JSON has no `sid` keeps its key
