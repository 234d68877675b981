"""Read units: a manifest cut into any number of byte ranges or row-group runs reads exactly as one unit.

Line numbers (the ids of malformed rows), blank-line counts, row order and pass-through types must not
depend on how the work is split, or on how many id partitions the duplicate check uses.
"""

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from internvl_batch.config import StorageConfig
from internvl_batch.config_loader import load_config
from internvl_batch.manifest.files import (
    expand_manifests,
    file_labels,
    needs_layout,
    number_units,
    plan_units,
)
from internvl_batch.manifest.formats.jsonl import count_newlines
from internvl_batch.manifest.formats.parquet import parquet_row_groups
from internvl_batch.manifest.local import read_manifests
from internvl_batch.manifest.read import UnitRows

STORAGE = StorageConfig()


def units_of(path, split):
    files = expand_manifests([str(path)], STORAGE)
    units = plan_units(files, split)
    layouts = {
        u.index: (
            parquet_row_groups(u.file.uri, STORAGE)
            if u.file.format == "parquet"
            else count_newlines(u.file.uri, u.start, u.stop, STORAGE)
        )
        for u in units
        if needs_layout(u)
    }
    return number_units(units, layouts, split)


def read_all(path, split):
    out, blank = [], 0
    for unit in units_of(path, split):
        rows = UnitRows(unit, STORAGE)
        out += [(n, r if isinstance(r, dict) else str(r)) for n, r in rows]
        blank += rows.blank_lines
    return out, blank


def messy_jsonl(rng: random.Random) -> bytes:
    lines = []
    for i in range(40):
        kind = rng.choice(["row", "row", "row", "blank", "spaces", "bad", "crlf", "long", "utf8"])
        row = {"id": f"r{i}", "image": f"{i}.jpg"}
        if kind == "row":
            lines.append(json.dumps(row).encode())
        elif kind == "blank":
            lines.append(b"")
        elif kind == "spaces":
            lines.append(b"   \t")
        elif kind == "bad":
            lines.append(b'{"id": "broken", ')
        elif kind == "crlf":
            lines.append(json.dumps(row).encode() + b"\r")
        elif kind == "long":
            lines.append(json.dumps({**row, "question": "x" * 300}).encode())
        else:
            lines.append(json.dumps({**row, "question": "日本語の質問 🎉"}, ensure_ascii=False).encode())
    return b"\n".join(lines) + rng.choice([b"\n", b"", b"\n\n", b"\n  "])


@pytest.mark.parametrize("seed", range(6))
def test_jsonl_byte_ranges_read_as_one(tmp_path, seed):
    path = tmp_path / "m.jsonl"
    path.write_bytes(messy_jsonl(random.Random(seed)))
    whole = read_all(path, 10**9)
    assert len(units_of(path, 10**9)) == 1
    size = path.stat().st_size
    for split in sorted({1, 2, 3, 7, 31, 64, 100, 257, size // 3, size // 2, size - 1, size}):
        assert read_all(path, max(split, 1)) == whole, f"split of {split} bytes"


def test_line_numbers_in_later_ranges_name_the_true_line(tmp_path):
    path = tmp_path / "big.jsonl"
    good = [json.dumps({"id": f"r{i}", "image": "a.jpg"}) for i in range(200)]
    good[150] = "{not json"
    good[180] = ""
    path.write_text("\n".join(good) + "\n")
    config = load_config(
        None,
        base={
            "input": {"manifests": str(path), "split_bytes": 512},
            "output": {"path": "unused"},
            "model": {"path": "tiny"},
        },
    )
    table, totals, report = read_manifests(config, partitions=3)
    rows = table.to_pylist()
    assert len(units_of(path, 512)) > 10
    assert [r["id"] for r in rows[149:152]] == ["r149", "big.jsonl:151", "r151"]
    assert rows[150]["error"].startswith("manifest: ManifestError: line 151 is not valid JSON")
    assert rows[150]["source"] == f"{path}:151" and report["blank_lines"] == 1 and totals.rows == 199


def test_parquet_row_group_units(tmp_path):
    path = tmp_path / "m.parquet"
    table = pa.table(
        {
            "id": [f"p{i}" for i in range(1000)],
            "image": [f"{i}.jpg" for i in range(1000)],
            "score": [i / 10 for i in range(1000)],
        }
    )
    pq.write_table(table, path, row_group_size=100)
    units = units_of(path, 2000)
    assert len(units) > 3 and [u.first_line for u in units][:2] == [
        1,
        units[0].first_line + (units[1].start - units[0].start) * 100,
    ]
    rows, _ = read_all(path, 2000)
    assert [n for n, _ in rows] == list(range(1, 1001)) and rows[999][1]["id"] == "p999"
    assert read_all(path, 10**9) == (rows, 0)


def test_duplicate_file_names_get_distinct_labels():
    assert file_labels(["s3://b/x/a.jsonl", "s3://b/y/b.jsonl"]) == ["a.jsonl", "b.jsonl"]
    assert file_labels(["s3://b/2024/m.jsonl", "s3://b/2025/m.jsonl"]) == ["2024/m.jsonl", "2025/m.jsonl"]


@pytest.mark.parametrize("partitions", [1, 4])
def test_keep_first_is_manifest_order_across_files_and_partitions(tmp_path, partitions):
    (tmp_path / "a.jsonl").write_text(
        "\n".join(json.dumps({"id": i, "image": f"a{n}.jpg"}) for n, i in enumerate(["x", "y", "x", "z"]))
    )
    (tmp_path / "b.jsonl").write_text(
        "\n".join(json.dumps({"id": i, "image": f"b{n}.jpg"}) for n, i in enumerate(["y", "w"]))
    )
    config = load_config(
        None,
        base={
            "input": {"manifests": str(tmp_path / "*.jsonl"), "duplicate_ids": "keep_first", "split_bytes": 40},
            "output": {"path": "unused"},
            "model": {"path": "tiny"},
        },
    )
    table, totals, report = read_manifests(config, partitions=partitions)
    rows = table.to_pylist()
    assert [(r["id"], r["media"][0].rsplit("/", 1)[1]) for r in rows] == [
        ("x", "a0.jpg"),
        ("y", "a1.jpg"),
        ("z", "a3.jpg"),
        ("w", "b1.jpg"),
    ]
    assert (totals.rows, totals.duplicate_ids, totals.duplicate_rows, totals.keys) == (4, 2, 2, 4)
    assert report["duplicate_id_examples"] == ["x", "y"]


def test_ids_whose_partition_hash_collides_are_not_duplicates(tmp_path):
    import zlib

    assert zlib.crc32(b"plumless") == zlib.crc32(b"buckeroo")  # the partitioning hash collides; the ids differ
    (tmp_path / "m.jsonl").write_text('{"id": "plumless", "image": "a.jpg"}\n{"id": "buckeroo", "image": "b.jpg"}\n')
    config = load_config(
        None,
        base={
            "input": {"manifests": str(tmp_path / "m.jsonl")},
            "output": {"path": "unused"},
            "model": {"path": "tiny"},
        },
    )
    table, totals, _ = read_manifests(config, partitions=8)
    assert table.column("id").to_pylist() == ["plumless", "buckeroo"] and totals.duplicate_ids == 0


def test_passthrough_types_agree_across_units(tmp_path):
    rows = [
        {
            "id": f"r{i}",
            "image": "a.jpg",
            "n": i,
            "f": i if i < 50 else i + 0.5,
            "mixed": i if i < 50 else "s",
            "tags": ["a"] if i % 2 else None,
        }
        for i in range(100)
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    config = load_config(
        None,
        base={
            "input": {
                "manifests": str(tmp_path / "m.jsonl"),
                "split_bytes": 300,
                "passthrough_columns": ["n", "f", "mixed", "tags", "absent"],
            },
            "resources": {"rows_per_block": 7},
            "output": {"path": "unused"},
            "model": {"path": "tiny"},
        },
    )
    table, _, _ = read_manifests(config)
    assert table.schema.field("in.n").type == pa.int64() and table.schema.field("in.f").type == pa.float64()
    assert table.schema.field("in.mixed").type == pa.string() and table.column("in.mixed").to_pylist()[:2] == ["0", "1"]
    assert (
        table.schema.field("in.tags").type == pa.list_(pa.string())
        and table.schema.field("in.absent").type == pa.null()
    )
    assert table.column("in.f").to_pylist()[49:51] == [49.0, 50.5]
