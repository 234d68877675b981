"""Manifests: three formats, relative paths, malformed rows as error rows, fatal problems named.

Read with `read_manifests`: the job's own passes (layout, scan, duplicate reduce, read stage) in one process.
"""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from internvl_batch.errors import ConfigError
from internvl_batch.manifest import resolve_relative
from tests.unit.manifest.reading import read_rows


class Report:
    def __init__(self, report: dict, totals):
        self.__dict__.update(report)
        self.totals = totals


def load(paths, **kwargs):
    rows, totals, report = read_rows(paths, **kwargs)
    return rows, Report(report, totals)


def jsonl(path, rows):
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))
    return path


def test_jsonl_rows_and_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    m = jsonl(
        tmp_path / "sub" / "m.jsonl",
        [
            {"id": "a", "image": "img/a.jpg", "question": "Q?"},
            {"id": 7, "images": ["x.png", "/abs/y.png", "s3://b/z.png"], "task": "ocr"},
        ],
    )
    rows, report = load([m])
    assert [r["id"] for r in rows] == ["a", "7"]
    assert rows[0]["media"] == [str(tmp_path / "sub" / "img" / "a.jpg")] and rows[0]["media_kind"] == "image"
    assert rows[1]["media"] == [str(tmp_path / "sub" / "x.png"), "/abs/y.png", "s3://b/z.png"]
    assert (rows[1]["media_kind"], rows[1]["task"], rows[0]["question"]) == ("images", "ocr", "Q?")
    assert report.rows == 2 and report.malformed_rows == 0


def test_malformed_rows_become_error_rows(tmp_path):
    m = jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "ok", "image": "a.jpg"},
            b"{not json",
            b"",
            {"image": "no-id.jpg"},
            {"id": "both", "image": "a.jpg", "images": ["b.jpg"]},
            {"id": "neither"},
            {"id": "badq", "image": "a.jpg", "question": 5},
            b'"a string"',
            b'{"id": "latin1", "image": "a.jpg", "question": "caf\xe9"}',
            {"id": "ftp", "image": "ftp://host/a.jpg"},
            {"id": "emptylist", "images": []},
        ],
    )
    rows, report = load([m])
    errors = {r["id"]: r["error"] for r in rows}
    assert errors["ok"] is None
    assert (
        errors["m.jsonl:2"]
        == "manifest: ManifestError: line 2 is not valid JSON: Expecting property name enclosed in double quotes"
    )
    assert errors["m.jsonl:4"] == "manifest: ManifestError: missing `id`"
    assert "row has `image` and `images`; use one" in errors["both"]
    assert "none of `image`, `images`, `video`, `document`" in errors["neither"]
    assert "`question` must be text" in errors["badq"]
    assert "JSON str, not an object" in errors["m.jsonl:8"]
    assert "not valid UTF-8" in errors["m.jsonl:9"]
    assert "unsupported URI scheme 'ftp'" in errors["ftp"]
    assert "non-empty list" in errors["emptylist"]
    assert len(rows) == 10 and report.blank_lines == 1 and report.malformed_rows == 9
    assert rows[1]["source"] == f"{m}:2" and rows[0]["tasks"] == ["caption"]


def test_csv_with_lists_and_bad_line(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(
        'id,image,images,question,shot\n1,a.jpg,,What?,x\n2,,"[""b.jpg"",""c.jpg""]",,y\n3,,d.jpg|e.jpg,,z\n4,too,many,fields,here,!\n'
    )
    rows, _ = load([m], passthrough_columns=["shot"])
    assert [r["id"] for r in rows] == ["1", "2", "3", "m.csv:5"]
    assert rows[1]["media"] == [str(tmp_path / "b.jpg"), str(tmp_path / "c.jpg")]
    assert rows[2]["media"] == [str(tmp_path / "d.jpg"), str(tmp_path / "e.jpg")]
    assert rows[0]["in.shot"] == "x" and rows[1]["question"] is None
    assert "6 fields, the header has 5" in rows[3]["error"]


def test_parquet(tmp_path):
    m = tmp_path / "m.parquet"
    pq.write_table(
        pa.table({"id": ["p1", "p2"], "image": ["a.jpg", None], "images": [None, ["b.jpg"]], "score": [0.5, 0.7]}), m
    )
    rows, _ = load([m], passthrough_columns=["score"])
    assert [(r["id"], r["media_kind"], r["in.score"]) for r in rows] == [("p1", "image", 0.5), ("p2", "images", 0.7)]


def test_glob_and_several_manifests_keep_order(tmp_path):
    jsonl(tmp_path / "b.jsonl", [{"id": "b1", "image": "x.jpg"}])
    jsonl(tmp_path / "a.jsonl", [{"id": "a1", "image": "x.jpg"}, {"id": "a2", "image": "x.jpg"}])
    rows, report = load([tmp_path / "*.jsonl"])
    assert [r["id"] for r in rows] == ["a1", "a2", "b1"]
    assert len(report.files) == 2


def test_duplicates_error_by_default(tmp_path):
    m = jsonl(tmp_path / "m.jsonl", [{"id": "x", "image": "a.jpg"}, {"id": "x", "image": "b.jpg"}])
    with pytest.raises(ConfigError, match="1 id appears more than once \\(e.g. x\\)"):
        load([m])
    rows, report = load([m], duplicate_ids="keep_first")
    assert len(rows) == 1 and rows[0]["media"] == [str(tmp_path / "a.jpg")]
    assert (report.duplicate_ids, report.duplicate_id_examples, report.rows) == (1, ["x"], 1)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("m.jsonl", b'{"image": "a.jpg"}\n', "no row has an `id` field"),
        ("m.csv", b"image,question\na.jpg,q\n", "no `id` column"),
        ("m.parquet", b"PAR1 garbage", "not a readable Parquet file"),
        ("m.txt", b"{}", "cannot tell the format"),
    ],
)
def test_fatal_manifest_problems_name_the_file(tmp_path, name, content, message):
    m = tmp_path / name
    m.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        load([m])
    assert str(m) in str(info.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load([tmp_path / "absent.jsonl"])
    with pytest.raises(ConfigError, match=r"\*.jsonl: no file matches the pattern"):
        load([tmp_path / "*.jsonl"])


def test_resolve_relative_on_s3():
    assert resolve_relative("img/a.jpg", "s3://bucket/dir/m.jsonl") == "s3://bucket/dir/img/a.jpg"
    assert resolve_relative("../a.jpg", "s3://bucket/dir/m.jsonl") == "s3://bucket/a.jpg"
    assert resolve_relative("s3://other/a.jpg", "s3://bucket/m.jsonl") == "s3://other/a.jpg"
