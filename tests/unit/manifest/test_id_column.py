"""`input.id_column`: another column as the id (Parquet written by Hugging Face `datasets`, img2dataset's `key`),
or null: ids made from the file and the row (`<file>:<n>`, 1-based), the name an id-less row gets anyway."""

import json

import datasets
import pyarrow.parquet as pq
import pytest

from internvl_batch.config_loader import load_config
from internvl_batch.errors import ConfigError
from internvl_batch.passthrough import carried
from tests.unit.manifest.reading import photo, read_rows


def read(manifests, **input_options):
    rows, totals, _ = read_rows(manifests, **input_options)
    return rows, totals


def hf_parquet(path, rows: int = 4, **columns) -> None:
    """A Parquet file written by `datasets` itself: an `Image()` column (struct {bytes, path}) and the given ones."""
    data = {"image": [{"bytes": photo(i), "path": f"p{i}.jpg"} for i in range(rows)], **columns}
    datasets.Dataset.from_dict(data).cast_column("image", datasets.Image()).to_parquet(str(path))


def test_a_datasets_parquet_with_its_own_id_column(tmp_path):
    m = tmp_path / "train.parquet"
    hf_parquet(m, uid=[f"u{i}" for i in range(4)], label=[3, 1, 4, 1])
    rows, totals = read([m], id_column="uid", passthrough_columns=["label"])
    assert [r["id"] for r in rows] == ["u0", "u1", "u2", "u3"] and totals.malformed_rows == 0
    assert [r["media_data"][0] for r in rows] == [photo(i) for i in range(4)]
    assert rows[2]["media"] == [f"{m}:3#1:p2.jpg"] and [r[carried("label")] for r in rows] == [3, 1, 4, 1]


def test_img2dataset_style_key_column(tmp_path):
    # img2dataset's Parquet output: `key` is the id, `jpg` the image bytes; a failed download has no image.
    import pyarrow as pa

    m = tmp_path / "00000.parquet"
    table = pa.table(
        {
            "key": ["000000000", "000000001"],
            "jpg": pa.array([photo(0), None], pa.binary()),
            "status": ["success", "failed_to_download"],
        }
    )
    pq.write_table(table, m)
    rows, _ = read([m], id_column="key", image_column="jpg")
    assert [(r["id"], r["error"]) for r in rows] == [
        ("000000000", None),
        ("000000001", "manifest: ManifestError: row has none of `image`, `images`, `video`, `document`"),
    ]


def test_no_id_column_names_the_top_level_columns_and_the_fixes(tmp_path):
    m = tmp_path / "train.parquet"
    hf_parquet(m, label=[0, 1, 2, 3])
    with pytest.raises(ConfigError) as info:
        read([m])
    message = str(info.value)
    assert message.startswith(f"manifest {m}: no `id` column (columns: image, label); set input.id_column")
    assert "bytes" not in message and "input.id_column: null" in message
    with pytest.raises(ConfigError, match=r"no `uid` column \(columns: image, label\); set input.id_column \('uid'\)"):
        read([m], id_column="uid")


def test_null_id_column_numbers_parquet_rows_from_1_whatever_the_units(tmp_path):
    m = tmp_path / "train.parquet"
    hf_parquet(m, rows=6, label=list(range(6)))
    pq.write_table(pq.read_table(m), m, row_group_size=2)  # three row groups: three read units below
    whole, _ = read([m], id_column=None)
    split, _ = read([m], id_column=None, split_bytes=1)
    assert [r["id"] for r in whole] == [f"train.parquet:{n}" for n in range(1, 7)]
    assert [r["id"] for r in split] == [r["id"] for r in whole]  # stable whatever the read units
    assert whole[0]["media_data"] == [photo(0)] and whole[5]["media_data"] == [photo(5)]


def test_null_id_column_matches_the_names_id_less_rows_get_today(tmp_path):
    m = tmp_path / "m.jsonl"
    lines = [{"id": "a", "image": "x.jpg"}, {"image": "y.jpg"}, None, "{broken", {"image": "z.jpg"}]
    m.write_text("".join(("" if r is None else r if isinstance(r, str) else json.dumps(r)) + "\n" for r in lines))
    by_id, _ = read([m])
    assert by_id[1]["id"] == "m.jsonl:2" and by_id[1]["error"] == "manifest: ManifestError: missing `id`"
    numbered, totals = read([m], id_column=None, split_bytes=20)  # several byte ranges
    assert [r["id"] for r in numbered] == ["m.jsonl:1", "m.jsonl:2", "m.jsonl:4", "m.jsonl:5"]  # line 3 is blank
    assert [r["error"] is None for r in numbered] == [True, True, False, True]
    assert numbered[2]["error"].startswith("manifest: ManifestError: line 4 is not valid JSON")
    assert totals.rows == 4


def test_null_id_column_for_a_jsonl_without_ids_and_csv(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"image": "a.jpg"}\n{"image": "b.jpg"}\n')
    with pytest.raises(ConfigError, match="no row has an `id` field; set input.id_column"):
        read([m])
    rows, _ = read([m], id_column=None)
    assert [(r["id"], r["error"]) for r in rows] == [("m.jsonl:1", None), ("m.jsonl:2", None)]
    c = tmp_path / "m.csv"
    c.write_text('image,caption\na.jpg,"two\nlines"\nb.jpg,x\n')
    with pytest.raises(ConfigError, match=r"no `id` column \(header: image, caption\)"):
        read([c])
    rows, _ = read([c], id_column=None)
    assert [r["id"] for r in rows] == ["m.csv:3", "m.csv:4"]  # the line each record ends on; the header is line 1


def test_two_files_of_one_name_keep_distinct_ids(tmp_path):
    for split in ("a", "b"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "m.jsonl").write_text('{"image": "x.jpg"}\n')
    rows, _ = read([tmp_path / "*" / "m.jsonl"], id_column=None)
    assert [r["id"] for r in rows] == ["a/m.jsonl:1", "b/m.jsonl:1"]


def test_an_empty_id_column_name_is_refused():
    with pytest.raises(Exception, match="id_column"):
        load_config(None, base={"input": {"manifests": "m.jsonl", "id_column": ""}, "output": {"path": "o"}})
