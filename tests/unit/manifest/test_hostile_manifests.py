"""Hostile manifests (issue 26): text that is not Unicode and media held in the manifest beyond fetch.max_bytes
become error rows naming the field or the limit; every other row is read as usual."""

import gzip
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from internvl_batch.config_loader import load_config
from internvl_batch.keys import key_hashes
from internvl_batch.manifest.local import read_manifests
from internvl_batch.stages.output import to_output_table
from tests.media import encode, make_photo

HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def job(tmp_path, manifests, **sections):
    base = {"input": {"manifests": manifests}, "output": {"path": str(tmp_path / "out")}, "model": {"path": "tiny"}}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return load_config(None, base=base)


def rows_by_id(table) -> dict:
    return {row["id"]: row for row in table.to_pylist()}


def written(table) -> pa.Table:
    """The rows as the job writes them: output columns, through Parquet and back."""
    buffer = io.BytesIO()
    pq.write_table(to_output_table(table, "tiny", []), buffer)
    return pq.read_table(buffer)


def photo(seed: int = 0) -> bytes:
    return encode(make_photo(64, 48, seed=seed), "JPEG")


def test_a_lone_surrogate_makes_its_row_an_error_row_naming_the_field(tmp_path):
    (tmp_path / "x.png").write_bytes(photo())
    lines = [
        b'{"id": "a", "image": "x.png", "question": "bad \\udfff"}',  # as in the issue
        b'{"id": "\\ud800", "image": "x.png"}',  # in the id: named by its line
        b'{"id": "c", "image": "x.png", "note\\udc80": 1}',  # in a field's name
        b'{"id": "d", "images": ["x.png", "y\\udfffz.png"]}',  # inside a list
        b'{"id": "ok", "image": "x.png", "question": "caf\\u00e9 \\ud83d\\ude00"}',  # a real pair: an emoji
    ]
    (tmp_path / "m.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    table, totals, _ = read_manifests(job(tmp_path, str(tmp_path / "m.jsonl")))
    rows = rows_by_id(table)
    assert totals.rows == 5 and sorted(rows) == ["a", "c", "d", "m.jsonl:2", "ok"]
    prefix = "manifest: ManifestError: "
    assert (
        rows["a"]["error"]
        == prefix + "`question` is not valid Unicode text (it holds a lone surrogate escape such as \\ud800)"
    )
    assert rows["m.jsonl:2"]["error"].startswith(prefix + "`id` is not valid Unicode text")
    assert (
        rows["c"]["error"]
        == prefix + "a field name ('note\\udc80') is not valid Unicode text (it holds a lone surrogate)"
    )
    assert rows["d"]["error"].startswith(prefix + "`images` is not valid Unicode text")
    assert rows["ok"]["error"] is None and rows["ok"]["question"] == "café 😀"
    # The rows' keys hash and the rows are writable as Parquet: nothing stops the scan or the write.
    assert written(table).num_rows == 5
    assert key_hashes(["\ud800"], ["caption"]).shape == (1, 2)  # defence in depth: a key never fails to hash


def test_parquet_text_that_is_not_utf8_is_an_error_row(tmp_path):
    # Arrow does not validate UTF-8 in Parquet string columns written by other tools; build such a file.
    questions = pa.array([b"fine", b"caf\xe9", None], pa.binary()).view(pa.string())
    images = pa.array([{"bytes": photo(i), "path": f"{i}.jpg"} for i in range(3)], HF_IMAGE)
    pq.write_table(pa.table({"id": ["p0", "p1", "p2"], "image": images, "question": questions}), tmp_path / "d.parquet")
    table, _, _ = read_manifests(job(tmp_path, str(tmp_path / "d.parquet")))
    rows = rows_by_id(table)
    assert rows["p1"]["error"] == "manifest: ManifestError: `question` holds bytes that are not valid UTF-8 text"
    assert rows["p0"]["error"] is None and rows["p0"]["question"] == "fine" and rows["p2"]["error"] is None
    assert written(table).num_rows == 3


def test_parquet_image_cells_over_fetch_max_bytes_are_not_passed_on(tmp_path):
    small, big = photo(1), photo(2) + bytes(6000)  # ~1 KB and ~7 KB
    limit = 4000
    # One row group of five rows: one cell over the limit (the column's average is within it).
    pq.write_table(
        pa.table(
            {
                "id": [f"g{i}" for i in range(5)],
                "image": pa.array(
                    [{"bytes": big if i == 3 else small, "path": f"{i}.jpg"} for i in range(5)], HF_IMAGE
                ),
            }
        ),
        tmp_path / "one.parquet",
    )
    # A row group whose image column is over rows x limit uncompressed (zeros compress to almost nothing): it is
    # not read at all, its rows are errors; the next row group is read.
    zeros = bytes(50_000)
    table = pa.table({"id": ["z0", "z1", "after"], "images": pa.array([[zeros], [zeros, small], [small]])})
    pq.write_table(table, tmp_path / "two.parquet", row_group_size=2, compression="zstd")
    assert (tmp_path / "two.parquet").stat().st_size < 20_000  # ~100 KB of images once expanded
    config = job(tmp_path, [str(tmp_path / "one.parquet"), str(tmp_path / "two.parquet")], fetch={"max_bytes": limit})
    out, totals, _ = read_manifests(config)
    rows = rows_by_id(out)
    assert totals.rows == 8
    assert rows["g3"]["error"] == (
        f"manifest: ManifestError: `image` holds an image of {len(big)} bytes, over fetch.max_bytes={limit}"
    )
    assert rows["g3"]["media_data"] is None  # the bytes are not carried on
    assert [rows[f"g{i}"]["error"] for i in (0, 1, 2, 4)] == [None] * 4
    for key in ("z0", "z1"):
        assert rows[key]["error"].startswith(
            "manifest: ManifestError: `images` was not read: its row group holds "
        ) and rows[key]["error"].endswith(f"for 2 rows, so some image is over fetch.max_bytes={limit}")
    assert rows["after"]["error"] is None and rows["after"]["media_data"] == [small]


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_webdataset_members_over_fetch_max_bytes_are_not_read(tmp_path):
    big = photo(3) + bytes(20_000)
    shard = tar_bytes(
        [
            ("00000.jpg", photo(0)),
            ("00000.json", b'{"id": "from-json", "note": "n0"}'),  # an `id` field: the key stays the id
            ("00001.jpg", big),
            ("00001.json", b"{}"),
            ("00002.json", b'{"question": "bad \\udfff"}'),
            ("00002.jpg", photo(2)),
            ("00003.npy", bytes(30_000)),  # a member no row uses: never read, whatever its size
            ("00003.png", photo(3)),
            ("00004.jpg", photo(4)),
        ]
    )
    (tmp_path / "s.tar").write_bytes(shard)
    table, totals, _ = read_manifests(job(tmp_path, str(tmp_path / "s.tar"), fetch={"max_bytes": 10_000}))
    rows = rows_by_id(table)
    assert totals.rows == 5 and sorted(rows) == ["00000", "00001", "00002", "00003", "00004"]
    assert rows["00000"]["error"] is None  # the JSON's `id` field does not replace the key
    assert rows["00001"]["error"] == (
        f"manifest: ManifestError: sample 00001: member 00001.jpg is {len(big)} bytes, over fetch.max_bytes=10000 "
        "(not read)"
    )
    assert rows["00002"]["error"].startswith(
        "manifest: ManifestError: sample 00002: 00002.json: `question` is not valid Unicode text"
    )
    assert rows["00003"]["error"] is None and rows["00004"]["error"] is None


def test_a_member_name_that_is_not_utf8_is_an_error_row(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for name, data in [("caf\xe9.jpg", photo(0)), ("ok.jpg", photo(1))]:  # latin-1 bytes: not UTF-8
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "s.tar").write_bytes(buffer.getvalue())
    table, _, _ = read_manifests(job(tmp_path, str(tmp_path / "s.tar")))
    rows = rows_by_id(table)
    assert rows["s.tar:1"]["error"] == (
        "manifest: ManifestError: sample 'caf\\udce9': the member name is not UTF-8 text"
    )
    assert rows["ok"]["error"] is None
    assert written(table).num_rows == 2


def test_compressed_shards_are_read_only_when_named_so(tmp_path):
    plain = tar_bytes([("00000.jpg", photo(0)), ("00001.jpg", photo(1))])
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / "s.tar").write_bytes(gzip.compress(plain))  # gzip under a plain .tar name
    table, totals, _ = read_manifests(job(tmp_path, str(tmp_path / "hidden" / "s.tar")))
    assert totals.rows == 1 and table.column("error").to_pylist() == [
        "manifest: ManifestError: shard s.tar is gzip-compressed: compressed shards are read only when named "
        ".tar.gz or .tgz (gzip), so that a small file cannot expand without notice"
    ]
    named = tmp_path / "named"
    named.mkdir()
    (named / "a.tar.gz").write_bytes(gzip.compress(plain))
    (named / "b.tgz").write_bytes(gzip.compress(tar_bytes([("00002.jpg", photo(2))])))
    (named / "c.tar.gz").write_bytes(plain)  # named gzip, but not
    table, totals, _ = read_manifests(job(tmp_path, str(named)))  # a directory: .tar.gz and .tgz are shards
    rows = rows_by_id(table)
    assert sorted(rows) == ["00000", "00001", "00002", "c.tar.gz:1"]
    assert [rows[k]["error"] for k in ("00000", "00001", "00002")] == [None] * 3
    assert rows["c.tar.gz:1"]["error"] == (
        "manifest: ManifestError: shard c.tar.gz is named like a gzip-compressed tar but is not gzip data"
    )


@pytest.mark.parametrize("size", [3, 10])
def test_bz2_and_other_compressions_are_refused(tmp_path, size):
    import bz2
    import lzma

    plain = tar_bytes([("00000.jpg", photo(0))])
    data = bz2.compress(plain) if size == 3 else lzma.compress(plain)
    (tmp_path / "s.tar").write_bytes(data)
    table, _, _ = read_manifests(job(tmp_path, str(tmp_path / "s.tar")))
    kind = "bzip2" if size == 3 else "xz"
    assert table.column("error").to_pylist() == [
        f"manifest: ManifestError: shard s.tar is {kind}-compressed: compressed shards are read only when named "
        ".tar.gz or .tgz (gzip), so that a small file cannot expand without notice"
    ]


def test_json_lines_are_unchanged_for_ordinary_rows(tmp_path):
    # The surrogate check runs only where the json module parsed a line with an escape: ordinary escapes keep
    # their meaning.
    (tmp_path / "x.png").write_bytes(photo())
    row = {"id": "e", "image": "x.png", "question": "tab\there \u00e9 \\u"}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    table, _, _ = read_manifests(job(tmp_path, str(tmp_path / "m.jsonl")))
    assert table.to_pylist()[0]["question"] == row["question"] and table.to_pylist()[0]["error"] is None


def gzip_shard_with_a_huge_member(path, size: int) -> None:
    """The issue's shard: a tar of a `size`-byte member of zeros (then a small sample), gzip-compressed as it is
    written (about 1.5 MB for 1.5 GB), never held in memory."""
    compressor = gzip.GzipFile(path, "wb", compresslevel=9)
    with compressor:
        header = tarfile.TarInfo("00000.jpg")
        header.size = size
        compressor.write(header.tobuf(format=tarfile.GNU_FORMAT))
        chunk, left = bytes(2**20), size
        while left:
            compressor.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        compressor.write(bytes(-size % 512))
        small = photo(1)
        header = tarfile.TarInfo("00001.jpg")
        header.size = len(small)
        compressor.write(header.tobuf(format=tarfile.GNU_FORMAT) + small + bytes(-len(small) % 512) + bytes(1024))


READ_AND_MEASURE = """
import json, sys
from internvl_batch.config import StorageConfig
from internvl_batch.manifest.files import expand_manifests, plan_units
from internvl_batch.manifest.read import UnitRows
rows = []
for unit in plan_units(expand_manifests([sys.argv[1]], StorageConfig(), max_media_bytes=256 * 2**20), 2**24):
    rows += [str(row) if isinstance(row, Exception) else str(row.get("image"))[:200] for _, row in UnitRows(unit, StorageConfig())]
# VmHWM: this process's own peak (ru_maxrss would include the parent's size at fork: Linux keeps it across exec)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rows": rows, "peak_mb": peak / 1024}))
"""


@pytest.mark.slow
def test_a_gzip_bomb_shard_is_refused_in_bounded_memory(tmp_path):
    # The case: 1.5 MB named .tar, holding a gzip-compressed tar with a 1.5 GB member (it took 4.7 GB in
    # the read task). Named .tar it is refused at its first bytes; named .tar.gz the member is skipped unread.
    # Each read runs in a fresh process, whose peak RSS is the read task's (the goal: under 300 MB).
    import subprocess
    import sys

    gzip_shard_with_a_huge_member(tmp_path / "bomb.tar", 1_500_000_000)
    (tmp_path / "bomb.tar.gz").hardlink_to(tmp_path / "bomb.tar")
    assert (tmp_path / "bomb.tar").stat().st_size < 2_000_000
    results = {}
    for name in ("bomb.tar", "bomb.tar.gz"):
        done = subprocess.run(
            [sys.executable, "-c", READ_AND_MEASURE, str(tmp_path / name)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        results[name] = json.loads(done.stdout)
    assert results["bomb.tar"]["rows"] == [
        "shard bomb.tar is gzip-compressed: compressed shards are read only when named .tar.gz or .tgz (gzip), so "
        "that a small file cannot expand without notice"
    ]
    rows = results["bomb.tar.gz"]["rows"]
    assert rows[0] == "sample 00000: member 00000.jpg is 1500000000 bytes, over fetch.max_bytes=268435456 (not read)"
    assert rows[1].startswith("{'bytes': b'\\xff\\xd8")  # the sample after it is read
    assert results["bomb.tar"]["peak_mb"] < 300 and results["bomb.tar.gz"]["peak_mb"] < 300, results
