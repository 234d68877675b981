"""Media roots (`input.media`): a folder tree read as rows without a manifest, on the job's read path
(`read_manifests`: layout, scan, read stage), and what resume decides from the objects' versions."""

import os

import numpy as np
import pytest

from internvl_batch.config_loader import load_config
from internvl_batch.done_keys import DoneRule, build_result_keys, text_hashes
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import object_version
from internvl_batch.keys import key_hashes
from internvl_batch.manifest.files import input_files, plan_read_units
from internvl_batch.manifest.formats import media as media_format
from internvl_batch.manifest.formats.media import split_root
from internvl_batch.manifest.local import read_manifests
from internvl_batch.manifest.read import UnitRows, unit_layout
from tests.media import encode, encode_pdf, make_photo


def library(root):
    """photos/ with nested folders, a video, a PDF, a text file, an empty image and a symlink loop."""
    (root / "2024" / "07").mkdir(parents=True)
    (root / "2025").mkdir()
    (root / "top.jpg").write_bytes(encode(make_photo(64, 48), "JPEG"))
    (root / "2024" / "a.png").write_bytes(encode(make_photo(50, 40, seed=1), "PNG"))
    (root / "2024" / "07" / "B.JPG").write_bytes(encode(make_photo(40, 50, seed=2), "JPEG"))
    (root / "2024" / "07" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (root / "2025" / "scan.pdf").write_bytes(encode_pdf([make_photo(60, 80)]))
    (root / "2025" / "notes.txt").write_text("not media")
    (root / "2025" / "empty.jpg").write_bytes(b"")
    os.symlink(root / "2024", root / "2024" / "07" / "loop")  # a folder linking to one above it
    return root


def config_for(root, tmp_path, **input_options):
    return load_config(
        None,
        base={
            "input": {"media": str(root), **input_options},
            "output": {"path": str(tmp_path / "out")},
            "model": {"path": "tiny"},
        },
    )


def test_a_folder_tree_is_one_row_per_media_object(tmp_path):
    root = library(tmp_path / "photos")
    table, totals, report = read_manifests(config_for(root, tmp_path))
    rows = {r["id"]: r for r in table.to_pylist()}
    assert sorted(rows) == [
        "2024/07/B.JPG",
        "2024/07/clip.mp4",
        "2024/a.png",
        "2025/empty.jpg",
        "2025/scan.pdf",
        "top.jpg",
    ]
    assert rows["top.jpg"]["media"] == [str(root / "top.jpg")] and rows["top.jpg"]["media_kind"] == "image"
    assert rows["2024/07/B.JPG"]["media_kind"] == "image"  # suffixes match in any case
    assert rows["2024/07/clip.mp4"]["media_kind"] == "video"
    assert rows["2025/scan.pdf"]["media_kind"] == "document"
    assert rows["2025/empty.jpg"]["error"] == "manifest: ManifestError: zero-byte object '2025/empty.jpg'"
    stat = os.stat(root / "2024" / "a.png")
    assert rows["2024/a.png"]["source_version"] == f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}"
    assert all(r["tasks"] == ["caption"] for r in rows.values())
    assert report["media_objects_skipped"] == 1  # notes.txt
    assert report["media_folders_unlisted"] == 1  # the loop, not followed
    assert totals.rows == 6 and not totals.duplicate_ids


def test_globs_ids_as_uris_and_a_question_for_every_object(tmp_path):
    root = library(tmp_path / "photos")
    config = config_for(f"{root}/**/*.jpg", tmp_path, media_id="uri", media_question="What is shown?")
    table, _, _ = read_manifests(config)
    ids = sorted(table.column("id").to_pylist())
    assert ids == [str(root / "2025" / "empty.jpg"), str(root / "top.jpg")]  # B.JPG: globs match case
    ok = table.filter(table.column("error").is_null()).to_pylist()  # the empty file is an error row
    assert [(r["tasks"], r["question"]) for r in ok] == [(["vqa"], "What is shown?")]  # task auto: vqa


def test_each_subfolder_is_listed_by_its_own_unit_below_the_target(tmp_path):
    root = library(tmp_path / "photos")
    config = config_for(root, tmp_path)
    files = input_files(config.input, config.storage, None)
    assert [(f.format, f.uri) for f in files] == [("media", str(root))]
    units = plan_read_units(files, 2**24, lambda todo: [unit_layout(u, config.storage) for u in todo])
    assert [(u.folders, u.stop) for u in units] == [((), 0), (("2024",), 1), (("2025",), 1)]
    # A folder gone between the layout and its listing (or unreadable) is counted, not fatal.
    for path in sorted((root / "2025").iterdir()):
        path.unlink()
    (root / "2025").rmdir()
    source = UnitRows(units[2], config.storage)
    assert list(source) == [] and source.counts.unlisted == 1


def test_many_folders_share_units_and_give_the_same_rows(tmp_path, monkeypatch):
    """Above TARGET_UNITS folders, consecutive folders share a unit (a scan and a read task each); the rows are
    those of one unit per folder, in the same order, and a folder gone before its listing costs only itself."""
    root = tmp_path / "photos"
    data = encode(make_photo(8, 8), "JPEG")
    for k in range(9):
        (root / f"f{k}" / "sub").mkdir(parents=True)
        for name in (f"f{k}/a.jpg", f"f{k}/sub/b.jpg"):
            (root / name).write_bytes(data)
    config = config_for(root, tmp_path)
    files = input_files(config.input, config.storage, None)

    def plan():
        units = plan_read_units(files, 2**24, lambda todo: [unit_layout(u, config.storage) for u in todo])
        rows = [raw["id"] for unit in units for _, raw in UnitRows(unit, config.storage)]
        return units, rows

    _, one_each = plan()
    monkeypatch.setattr(media_format, "TARGET_UNITS", 4)
    units, grouped = plan()
    assert [u.folders for u in units] == [(), ("f0", "f1"), ("f2", "f3"), ("f4", "f5"), ("f6", "f7"), ("f8",)]
    assert grouped == one_each == [f"f{k}/{name}" for k in range(9) for name in ("a.jpg", "sub/b.jpg")]
    for path in (root / "f2" / "sub" / "b.jpg", root / "f2" / "a.jpg", root / "f2" / "sub", root / "f2"):
        path.rmdir() if path.is_dir() else path.unlink()
    source = UnitRows(units[2], config.storage)
    assert [raw["id"] for _, raw in source] == ["f3/a.jpg", "f3/sub/b.jpg"] and source.counts.unlisted == 1


def test_a_missing_root_or_a_file_fails_fast_with_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no such folder or prefix"):
        read_manifests(config_for(tmp_path / "nowhere", tmp_path))
    (tmp_path / "one.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="is a file"):
        read_manifests(config_for(tmp_path / "one.jpg", tmp_path))
    with pytest.raises(Exception, match="input.media|input.manifests"):
        load_config(None, base={"input": {}, "output": {"path": "o"}, "model": {"path": "tiny"}})


def test_a_changed_object_is_done_again_and_counted(tmp_path):
    root = library(tmp_path / "photos")
    config = config_for(root, tmp_path)
    table, _, _ = read_manifests(config)
    ids, versions = table.column("id").to_pylist(), table.column("source_version").to_pylist()
    state = np.zeros((len(ids), 4), np.uint64)
    state[:, 0], state[:, 2] = text_hashes(versions), 1
    results = build_result_keys(
        [np.concatenate([key_hashes(ids, ["caption"] * len(ids)), state], axis=1)], [], DoneRule(keep=True)
    )
    _, totals, _ = read_manifests(config, done_keys=results)
    assert (totals.done_keys, totals.changed_keys, totals.found_keys) == (6, 0, 6)
    photo = root / "2024" / "a.png"
    photo.write_bytes(encode(make_photo(51, 40, seed=1), "PNG"))  # replaced under the same name
    table, totals, _ = read_manifests(config, done_keys=results)
    assert table.column("id").to_pylist() == ["2024/a.png"]
    assert (totals.done_keys, totals.changed_keys, totals.found_keys) == (5, 1, 6)
    os.unlink(photo)
    _, totals, _ = read_manifests(config, done_keys=results)
    assert len(results) - totals.found_keys == 1  # the summary's results_orphaned


def test_roots_split_at_their_first_glob_and_versions_name_what_the_store_gives():
    root, pattern = split_root("s3://lib/photos/2024-*/**/*.jpg")
    assert root == "s3://lib/photos" and pattern.match("2024-07/x/y.jpg") and not pattern.match("2023/y.jpg")
    assert split_root("s3://lib/photos/") == ("s3://lib/photos", None)
    assert object_version({"ETag": '"abc"', "VersionId": "v1"}) == "etag=abc version=v1"
    assert object_version({"generation": 17, "etag": "CKih"}) == "etag=CKih generation=17"
    assert object_version({"size": 3}) is None


def test_a_name_that_is_not_utf8_is_an_error_row(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    (root / "ok.jpg").write_bytes(encode(make_photo(20, 20), "JPEG"))
    with open(os.path.join(os.fsencode(root), b"caf\xe9.jpg"), "wb") as f:  # Latin-1, as old cameras wrote
        f.write(encode(make_photo(20, 20), "JPEG"))
    table, _, _ = read_manifests(config_for(root, tmp_path))
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["caf\ufffd.jpg"]["error"] == "manifest: ManifestError: the object's name is not UTF-8 text; rename it"
    assert rows["ok.jpg"]["error"] is None
