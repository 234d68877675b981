"""The format registry is the one place an input format is declared: a format registered here, and nowhere else,
is selected by its suffixes, picked up by folder listings (with its metadata files left out), planned, laid
out, numbered and read through the generic code, and accepted as `input.format`; a name the registry does not
hold is refused when the config loads, naming those it does."""

import re
from dataclasses import replace

import pytest

from internvl_batch.config import JobConfig, StorageConfig
from internvl_batch.config_loader import load_config
from internvl_batch.errors import ConfigError
from internvl_batch.manifest import formats
from internvl_batch.manifest.files import detect_format, expand_manifests, plan_read_units
from internvl_batch.manifest.formats.base import ManifestFormat, read_whole
from internvl_batch.manifest.read import unit_layout
from tests.unit.manifest.reading import read_rows

STORAGE = StorageConfig()
MINIMAL = {"input": {"manifests": "m.jsonl"}, "output": {"path": "out"}, "model": {"path": "tiny"}}
BUILT_IN = "parquet, arrow, jsonl, csv, webdataset"


class ToyFormat(ManifestFormat):
    """`.toy` files: one image path per line, read in units of two lines once a layout has counted them."""

    name = "toy"
    suffixes = (".toy", ".toy.txt")
    directory_suffixes = (".toy",)  # `.toy.txt` files are read only when named
    metadata_beside = (".csv",)  # `a.csv` beside `a.toy` describes it: not a manifest

    def needs_layout(self, unit):
        return True

    def layout(self, unit, storage):
        return len(read_whole(unit, storage).splitlines())

    def units(self, planned, layouts, split_bytes, first_index):
        out = []
        for unit, lines in zip(planned, layouts):
            for start in range(0, lines, 2):
                stop = min(start + 2, lines)
                out.append(replace(unit, index=first_index + len(out), start=start, stop=stop, first_line=start + 1))
        return out

    def rows(self, unit, storage, counts):
        lines = read_whole(unit, storage).decode().splitlines()
        for number in range(unit.start + 1, unit.stop + 1):
            yield number, {"id": f"toy{number}", "image": lines[number - 1]}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(formats, "REGISTRY", (*formats.REGISTRY, ToyFormat()))


def toy_file(path, lines=5):
    path.write_text("".join(f"img{i}.jpg\n" for i in range(lines)))
    return path


def test_a_registered_format_is_read_with_no_other_change(tmp_path, toy):
    manifest = toy_file(tmp_path / "a.toy")
    files = expand_manifests([str(manifest)], STORAGE)
    assert [f.format for f in files] == ["toy"]
    units = plan_read_units(files, 2**20, lambda todo: [unit_layout(u, STORAGE) for u in todo])
    assert [(u.index, u.start, u.stop, u.first_line) for u in units] == [(0, 0, 2, 1), (1, 2, 4, 3), (2, 4, 5, 5)]
    rows, totals, _ = read_rows([manifest])
    assert [r["id"] for r in rows] == [f"toy{i}" for i in range(1, 6)] and totals.rows == 5
    assert [r["media"] for r in rows] == [[str(tmp_path / f"img{i}.jpg")] for i in range(5)]
    assert all(r["error"] is None for r in rows)
    # The generic parts still apply: ids from row numbers, and the format named for a file of another suffix.
    numbered, _, _ = read_rows([manifest], id_column=None)
    assert [r["id"] for r in numbered] == [f"a.toy:{i}" for i in range(1, 6)]
    named, _, _ = read_rows([toy_file(tmp_path / "list.txt", 3)], format="toy")
    assert [r["id"] for r in named] == ["toy1", "toy2", "toy3"]


def test_suffixes_and_folder_listings_come_from_the_registry(tmp_path, monkeypatch):
    for name in ("a.toy", "b.toy.txt"):
        toy_file(tmp_path / name)
    (tmp_path / "a.csv").write_text("id,image\nx,x.jpg\n")
    (tmp_path / "c.jsonl").write_text('{"id": "c", "image": "c.jpg"}\n')
    with pytest.raises(ConfigError, match=r"cannot tell the format from '\.toy' \(known: \.parquet, .*\); set input"):
        detect_format(str(tmp_path / "a.toy"), "auto")
    listed = [f.label for f in expand_manifests([str(tmp_path)], STORAGE)]
    assert listed == ["a.csv", "c.jsonl"]  # without the toy format: its files are not manifests

    monkeypatch.setattr(formats, "REGISTRY", (*formats.REGISTRY, ToyFormat()))
    assert detect_format(str(tmp_path / "a.toy"), "auto") == "toy"
    assert detect_format("s3://b/B.TOY.TXT?versionId=1", "auto") == "toy"  # a two-part suffix, any case
    assert formats.known_suffixes()[-2:] == [".toy", ".toy.txt"] and ".toy.txt" not in formats.listed_suffixes()
    listed = [(f.label, f.format) for f in expand_manifests([str(tmp_path)], STORAGE)]
    assert listed == [("a.toy", "toy"), ("c.jsonl", "jsonl")]  # a.csv is a.toy's metadata; b.toy.txt not listed
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.toy.txt").write_text("x")
    with pytest.raises(ConfigError) as info:
        expand_manifests([str(tmp_path / "d")], STORAGE)
    assert "manifests end in .parquet" in str(info.value) and str(info.value).split("; manifests end in ")[1].endswith(
        ".tgz, .toy; `.toy.txt` files in a folder are taken as metadata: name a toy file explicitly"
    )


def test_input_format_names_come_from_the_registry(toy):
    for name in ("auto", "toy", *BUILT_IN.split(", ")):
        assert load_config(None, [f"input.format={name}"], base=MINIMAL).input.format == name
    with pytest.raises(ConfigError) as info:
        load_config(None, ["input.format=xml"], base=MINIMAL)
    assert str(info.value) == (
        "--set input.format=...: invalid configuration: input.format: must be auto (by extension) or one of: "
        f"{BUILT_IN}, toy"
    )


def test_unknown_input_format_is_refused_naming_the_known_ones(tmp_path):
    message = f"must be auto (by extension) or one of: {BUILT_IN}"
    with pytest.raises(ConfigError) as info:
        load_config(None, ["input.format=xml", "generation.max_new_tokens=many"], base=MINIMAL)
    assert f"--set input.format=...: input.format: {message}" in str(info.value) and "\n" not in str(info.value)
    assert "max_new_tokens" in str(info.value)  # reported with pydantic's own problems, on the same line
    # A config built in Python skips the loader: the registry's lookup refuses the name, before any listing.
    config = JobConfig.model_validate(
        {**MINIMAL, "input": {"manifests": [str(tmp_path / "none.xml")], "format": "xml"}}
    )
    with pytest.raises(ConfigError, match=re.escape(f"input.format: unknown manifest format 'xml'; it {message}")):
        expand_manifests(config.input.manifests, STORAGE, config.input.format)


def test_the_registry_is_consistent():
    names = formats.format_names()
    suffixes = formats.known_suffixes()
    assert len(set(names)) == len(names) and len(set(suffixes)) == len(suffixes)
    assert all(s.startswith(".") and s == s.lower() for s in suffixes)
    assert set(formats.listed_suffixes()) <= set(suffixes) and ".json" not in formats.listed_suffixes()
    for fmt in formats.REGISTRY:
        assert formats.format_named(fmt.name) is fmt
        assert all(formats.format_for_suffix(s) is fmt for s in fmt.suffixes)
