"""Parquet manifests with the images inside: encoded bytes, or the Hugging Face datasets `Image` struct
({bytes, path}); read without a fetch, named `<manifest>:<row>#<n>` in the output, never carried as bytes."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.manifest.local import read_manifests
from internvl_batch.manifest.rows import parse_row
from tests.helpers import job_config
from tests.media import encode, make_photo

HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # what datasets' Image feature writes


def photo(seed: int, size=(640, 480)) -> bytes:
    return encode(make_photo(*size, seed=seed), "JPEG")


def test_rows_with_images_inside():
    row = parse_row({"id": "a", "image": photo(1)}, "m:1")
    assert (row.error, row.media, row.media_data) == (None, ("",), (photo(1),))
    row = parse_row({"id": "b", "image": {"bytes": photo(2), "path": "cat.jpg"}}, "m:2")
    assert (row.media, row.media_data) == (("cat.jpg",), (photo(2),))
    row = parse_row({"id": "c", "image": {"bytes": None, "path": "s3://b/c.jpg"}}, "m:3")  # datasets' path-only form
    assert (row.media, row.media_data) == (("s3://b/c.jpg",), None)
    row = parse_row({"id": "d", "images": [photo(3), "s3://b/d.jpg"]}, "m:4")
    assert (row.media_kind, row.media, row.media_data) == ("images", ("", "s3://b/d.jpg"), (photo(3), None))
    assert parse_row({"id": "e", "image": {"bytes": None, "path": None}}, "m:5").error == (
        "manifest: ManifestError: `image` holds an image struct with neither bytes nor a path"
    )
    assert parse_row({"id": "f", "image": b""}, "m:6").error.startswith("manifest: ManifestError: `image` must be")
    assert parse_row({"id": "g", "image": {"bytes": photo(1)}, "question": 3}, "m:7").error.startswith(
        "manifest: ManifestError: `question` must be text"
    )


@pytest.fixture
def dataset(tmp_path):
    """A Hugging Face-style Parquet dataset directory: two shards, the image column named `picture`."""
    root = tmp_path / "dataset"
    root.mkdir()
    rows = [{"id": f"r{i}", "picture": {"bytes": photo(i), "path": f"img{i}.jpg"}, "label": f"L{i}"} for i in range(5)]
    rows.append({"id": "broken", "picture": {"bytes": b"not an image", "path": "x.jpg"}, "label": "bad"})
    schema = pa.schema([("id", pa.string()), ("picture", HF_IMAGE), ("label", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows[:3], schema), root / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:], schema), root / "train-00001-of-00002.parquet")
    (root / "dataset_info.json").write_text("{}")  # not a manifest: ignored
    return root


def test_a_parquet_dataset_directory_is_a_manifest(dataset, tiny_checkpoint, tmp_path):
    from internvl_batch.stages.prepare import PrepareStage

    config = job_config(
        tiny_checkpoint,
        tmp_path / "out",
        input={"manifests": str(dataset), "image_column": "picture", "passthrough_columns": ["label"]},
    )
    table, totals, _ = read_manifests(config)
    assert totals.rows == 6 and table.column("error").to_pylist() == [None] * 6
    media = table.column("media").to_pylist()
    assert media[0] == [f"{dataset}/train-00000-of-00002.parquet:1#1:img0.jpg"]
    prepared = PrepareStage.from_config(config).prepare(table)
    assert "media_data" not in prepared.column_names  # the bytes end in the CPU stage, as tiles
    assert not any(pa.types.is_binary(f.type) for f in prepared.schema if f.name != "pixels")
    errors = dict(zip(prepared.column("id").to_pylist(), prepared.column("error").to_pylist()))
    assert errors["broken"].startswith("decode: ImageDecodeError: not an image")
    assert [errors[f"r{i}"] for i in range(5)] == [None] * 5
    expected = ImagePreprocessor()(photo(0)).tiles
    first = np.frombuffer(prepared.column("pixels")[0].as_py(), np.uint8).reshape(expected.shape)
    assert np.array_equal(first, expected)  # the same tiles as the image fetched from a file


def test_rows_without_ids_keep_their_own_embedded_images(tiny_checkpoint, tmp_path):
    # Python API rows may have no id, so their embedded images share a name ("None#1"): each row must still
    # be decoded from its own bytes.
    from internvl_batch.stages.prepare import PrepareStage
    from internvl_batch.stages.rows_in import RowsStage

    config = job_config(tiny_checkpoint, tmp_path / "out", input={"manifests": "unused.jsonl"})
    images = [photo(1, (448, 448)), photo(2, (800, 600))]
    rows = pa.table({"image": pa.array(images, pa.binary())})
    requests = RowsStage(config.task, config.generation.max_new_tokens)(rows)
    assert requests.column("media").to_pylist() == [["None#1"], ["None#1"]]
    prepared = PrepareStage.from_config(config).prepare(requests)
    for row, data in zip(prepared.to_pylist(), images):
        expected = ImagePreprocessor()(data).tiles
        assert row["error"] is None and row["pixels"] == expected.tobytes()
