"""Arrow IPC manifests: Hugging Face `save_to_disk` folders written by `datasets` itself, standalone `.arrow`
and Feather v2 files; read in units of record batches, images as for Parquet, bad files named."""

import datasets
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from internvl_batch.config import StorageConfig
from internvl_batch.config_loader import load_config
from internvl_batch.errors import ConfigError
from internvl_batch.manifest.files import expand_manifests, needs_layout, number_units, plan_units
from internvl_batch.manifest.formats.arrow import arrow_batches
from internvl_batch.manifest.local import read_manifests
from internvl_batch.manifest.read import unit_layout
from internvl_batch.passthrough import carried
from tests.media import encode, make_photo

STORAGE = StorageConfig()


def photo(seed: int) -> bytes:
    return encode(make_photo(96, 64, seed=seed), "JPEG")


def config_for(manifests, fetch=None, **input_options):
    return load_config(
        None,
        base={
            "input": {"manifests": [str(m) for m in manifests], **input_options},
            "output": {"path": "unused"},
            "model": {"path": "tiny"},
            "fetch": fetch or {},
        },
    )


def read(manifests, **input_options):
    table, totals, _ = read_manifests(config_for(manifests, **input_options))
    return (table.to_pylist() if table is not None else []), totals


def hf_dataset(rows: int) -> datasets.Dataset:
    data = {
        "uid": [f"u{i}" for i in range(rows)],
        "image": [{"bytes": photo(i), "path": f"p{i}.jpg"} for i in range(rows)],
        "label": list(range(rows)),
        "caption": [f"caption {i}" for i in range(rows)],
    }
    return datasets.Dataset.from_dict(data).cast_column("image", datasets.Image())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A `save_to_disk` folder of 12 rows in 2 shards of 2 record batches each (datasets writes batches of up to
    `DEFAULT_MAX_BATCH_SIZE` rows, 100 MB: lowered here so that small files hold several)."""
    root = tmp_path_factory.mktemp("saved") / "ds"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "DEFAULT_MAX_BATCH_SIZE", 3)
        hf_dataset(12).save_to_disk(str(root), num_shards=2)
    return root


def test_a_save_to_disk_folder_is_read_as_arrow(saved):
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow", "dataset_info.json", "state.json"]
    (saved / "cache-0123.arrow").write_bytes(b"not listed in state.json")  # what a later .map() leaves: not read
    rows, totals = read([saved], id_column="uid", passthrough_columns=["label", "caption"])
    assert [r["id"] for r in rows] == [f"u{i}" for i in range(12)] and totals.malformed_rows == 0
    assert [r["media_data"][0] for r in rows] == [photo(i) for i in range(12)]
    assert rows[0]["media"] == [f"{saved}/data-00000-of-00002.arrow:1#1:p0.jpg"]
    assert rows[7]["media"] == [f"{saved}/data-00001-of-00002.arrow:2#1:p7.jpg"]
    assert [r[carried("label")] for r in rows] == list(range(12)) and rows[4][carried("caption")] == "caption 4"


def test_record_batches_become_read_units(saved):
    files = expand_manifests([str(saved)], STORAGE, renames={"id": "uid"})
    assert [f.format for f in files] == ["arrow", "arrow"]
    layout = arrow_batches(files[0].uri, STORAGE, "uid")
    with pa.memory_map(files[0].uri) as source:
        written = [batch.num_rows for batch in pa.ipc.open_stream(source)]
    assert [rows for rows, *_ in layout] == written == [3, 3]  # the header-only layout agrees with pyarrow
    units = plan_units(files, 1)
    units = number_units(units, {u.index: unit_layout(u, STORAGE) for u in units if needs_layout(u)}, 1)
    assert [(u.file.label, u.first_line) for u in units] == [
        ("data-00000-of-00002.arrow", 1),
        ("data-00000-of-00002.arrow", 4),
        ("data-00001-of-00002.arrow", 1),
        ("data-00001-of-00002.arrow", 4),
    ]
    whole, _ = read([saved], id_column=None)
    split, _ = read([saved], id_column=None, split_bytes=1)  # one unit per record batch
    assert [r["id"] for r in split] == [r["id"] for r in whole]
    assert whole[3]["id"] == "data-00000-of-00002.arrow:4" and whole[3]["media_data"] == [photo(3)]


def test_standalone_arrow_files_stream_and_file_format(tmp_path):
    table = hf_dataset(5).data.table  # the Arrow table datasets holds: struct images, its feature metadata
    stream, filed, feather2 = tmp_path / "a.arrow", tmp_path / "b.arrow", tmp_path / "c.feather"
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    with pa.OSFile(str(filed), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    feather.write_feather(table, str(feather2), compression="zstd", chunksize=2)
    for path in (stream, filed, feather2):
        rows, _ = read([path], id_column="uid", split_bytes=1)
        assert [r["id"] for r in rows] == [f"u{i}" for i in range(5)], path
        assert [r["media_data"][0] for r in rows] == [photo(i) for i in range(5)]


def test_dictionary_encoded_columns_are_read_in_one_unit(tmp_path):
    table = pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "image": pa.array(["x.jpg", "y.jpg", "x.jpg", "z.jpg"]).dictionary_encode(),
        }
    )
    path = tmp_path / "d.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1)
    assert arrow_batches(str(path), STORAGE) == [(0, path.stat().st_size, 0, path.stat().st_size)]
    rows, _ = read([path], split_bytes=1)
    assert [(r["id"], r["media"]) for r in rows] == [
        ("a", [str(tmp_path / "x.jpg")]),
        ("b", [str(tmp_path / "y.jpg")]),
        ("c", [str(tmp_path / "x.jpg")]),
        ("d", [str(tmp_path / "z.jpg")]),
    ]


def test_images_over_fetch_max_bytes_are_error_rows(tmp_path):
    big = photo(1) + bytes(50_000)
    table = pa.table({"id": ["a", "b", "c"], "image": pa.array([photo(0), big, photo(2)], pa.binary())})
    path = tmp_path / "m.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=3)
    rows, _ = read([path], fetch={"max_bytes": 20_000})
    assert [r["error"] for r in rows] == [
        None,
        f"manifest: ManifestError: `image` holds an image of {len(big)} bytes, over fetch.max_bytes=20000",
        None,
    ]
    huge = pa.table({"id": ["h"], "image": pa.array([bytes(3 * 2**20)], pa.binary())})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, huge.schema) as writer:
        writer.write_table(huge)
    rows, _ = read([path], fetch={"max_bytes": 1000})  # 3 MiB for one row: the batch is not read at all
    assert rows[0]["id"] == "m.arrow:1" and "a record batch of 1 rows was not read" in rows[0]["error"]


def test_a_dataset_dict_folder_names_its_splits(tmp_path):
    datasets.DatasetDict({"train": hf_dataset(2), "test": hf_dataset(1)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ConfigError) as info:
        read([tmp_path / "dd"])
    message = str(info.value)
    assert "a Hugging Face DatasetDict saved with save_to_disk (splits: test, train)" in message
    assert f"point input.manifests at one split's folder ({tmp_path / 'dd' / 'test'})" in message
    rows, _ = read([tmp_path / "dd" / "train"], id_column="uid")
    assert [r["id"] for r in rows] == ["u0", "u1"]


@pytest.mark.parametrize(
    "content,message",
    [
        (b"PAR1 this is parquet, not arrow", "not an Arrow IPC file or stream"),
        (b"FEA1" + bytes(60), "a Feather v1 file, which is not read; convert it to Feather v2"),
    ],
)
def test_files_that_are_not_arrow_ipc_are_named(tmp_path, content, message):
    path = tmp_path / "m.arrow"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        read([path])
    assert str(path) in str(info.value)


def test_a_truncated_arrow_file_is_named(tmp_path, saved):
    data = (saved / "data-00000-of-00002.arrow").read_bytes()
    path = tmp_path / "cut.arrow"
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ConfigError, match=f"manifest {path}: not a readable Arrow file: it is cut short"):
        read([path], id_column="uid")
    with pytest.raises(ConfigError, match=r"no `id` column \(columns: uid, image, label, caption\)"):
        read([saved / "data-00000-of-00002.arrow"])
