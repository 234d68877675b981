"""Local media are read only under fetch.local_roots (issue 26): paths, `../`, symlinks, file:// hosts,
/proc, /sys, /dev; and error texts never quote a file's bytes."""

import os

import pytest

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.config_loader import load_config
from internvl_batch.errors import FetchError, PathRefused
from internvl_batch.imaging.decode import open_image
from internvl_batch.imaging.sniff import looks_like
from internvl_batch.local_media import default_local_roots, with_local_roots
from internvl_batch.storage import MediaFetcher
from tests.media import encode, make_photo


@pytest.fixture
def tree(tmp_path):
    """root/ (allowed) with a photo and a link out; outside/ (not allowed) with a secret."""
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "sub" / "a.jpg").write_bytes(encode(make_photo(32, 32), "JPEG"))
    (tmp_path / "outside" / "secret.txt").write_text("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENG\n")
    (tmp_path / "root" / "link.jpg").symlink_to(tmp_path / "outside" / "secret.txt")
    return tmp_path


def fetcher(roots) -> MediaFetcher:
    return MediaFetcher(StorageConfig(), FetchConfig(local_roots=roots, retries=0))


def test_paths_under_a_root_are_read(tree):
    read = fetcher([str(tree / "root")])
    assert read.fetch(str(tree / "root" / "sub" / "a.jpg"))[:3] == b"\xff\xd8\xff"
    assert read.fetch(f"file://{tree}/root/sub/a.jpg")[:3] == b"\xff\xd8\xff"
    assert read.fetch(f"file://localhost{tree}/root/sub/a.jpg")[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize(
    "path, reason",
    [
        ("{tree}/outside/secret.txt", "outside fetch.local_roots ({tree}/root); local media are read only there"),
        ("{tree}/root/../outside/secret.txt", "outside fetch.local_roots"),  # ../ out of the root
        ("{tree}/root/link.jpg", "outside fetch.local_roots"),  # a link out of the root
        ("{tree}/root/../outside/absent.jpg", "outside fetch.local_roots"),  # refused before any stat
        ("/proc/self/environ", "'proc' files are never read as media"),
        ("/sys/kernel/notes", "'sys' files are never read as media"),
        ("/dev/zero", "'dev' files are never read as media"),
        ("file://fileserver{tree}/root/sub/a.jpg", "file:// URIs must name this machine (no host or localhost)"),
    ],
)
def test_other_local_paths_are_refused_without_being_read(tree, path, reason):
    path, reason = path.format(tree=tree), reason.format(tree=tree)
    with pytest.raises(PathRefused) as refused:
        fetcher([str(tree / "root")]).fetch(path)
    assert str(refused.value) == f"{path}: {reason}" or str(refused.value).startswith(f"{path}: {reason}")
    assert isinstance(refused.value, FetchError)  # a fetch error: the row's, and never retried


def test_no_roots_refuse_every_local_read_and_no_limit_keeps_the_fixed_rules(tree):
    with pytest.raises(PathRefused, match="outside fetch.local_roots \\(none: local reads are off\\)"):
        fetcher([]).fetch(str(tree / "root" / "sub" / "a.jpg"))
    assert fetcher(None).fetch(str(tree / "outside" / "secret.txt")).startswith(b"AWS")  # stages built by hand
    with pytest.raises(PathRefused, match="never read"):
        fetcher(None).fetch("/proc/self/environ")
    if os.path.exists("/root"):  # /proc reached through a link is /proc too
        link = tree / "root" / "proc"
        link.symlink_to("/proc/self")
        with pytest.raises(PathRefused, match="'proc' files are never read"):
            fetcher(None).fetch(str(link / "environ"))


def test_the_job_default_is_the_manifests_directories_and_for_a_local_run_the_working_directory(tmp_path):
    manifests = [str(tmp_path / "a" / "m.jsonl"), "s3://bucket/m.jsonl", f"file://{tmp_path}/b/n.jsonl"]
    assert default_local_roots(manifests, local_run=False, cwd=str(tmp_path / "w")) == [
        str(tmp_path / "a"),
        str(tmp_path / "b"),
    ]
    assert default_local_roots(manifests, local_run=True, cwd=str(tmp_path / "w"))[-1] == str(tmp_path / "w")
    assert default_local_roots([], local_run=True, cwd="/") == []  # never the whole filesystem


def test_the_job_resolves_and_records_its_roots(tmp_path, monkeypatch):
    config = load_config(
        None,
        base={"input": {"manifests": "m.jsonl"}, "output": {"path": str(tmp_path / "o")}, "model": {"path": "tiny"}},
    )
    files = [str(tmp_path / "m" / "m.jsonl")]
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert with_local_roots(config, files).fetch.local_roots == [str(tmp_path / "m"), str(tmp_path)]
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a cluster: the driver's directory means nothing there
    assert with_local_roots(config, files).fetch.local_roots == [str(tmp_path / "m")]
    config.fetch.local_roots = ["media", "~/pictures"]  # relative to the working directory, made absolute
    assert with_local_roots(config, files).fetch.local_roots == [
        str(tmp_path / "media"),
        os.path.expanduser("~/pictures"),
    ]


def test_relative_roots_in_a_config_file_are_relative_to_the_file(tmp_path):
    (tmp_path / "job.yaml").write_text(
        "input: {manifests: m.jsonl}\noutput: {path: out}\nmodel: {path: tiny}\nfetch: {local_roots: [media]}\n"
    )
    assert load_config(tmp_path / "job.yaml").fetch.local_roots == [str(tmp_path / "media")]


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"", "nothing (0 bytes)"),
        (b"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENG\n", "text"),
        (b"PYENV_ROOT=/root\x00HOME=/root\x00", "binary data"),  # /proc/self/environ
        (b"<!DOCTYPE html><html>", "HTML or XML text"),
        (b'{"a": 1}', "JSON or other text"),
        (b"%PDF-1.7\n", "a PDF document"),
        (b"\x00\x00\x00\x18ftypmp42", "an MP4/MOV/HEIC container"),
        ("é".encode() * 400, "text"),  # a character cut at the end of the sample is still text
    ],
)
def test_error_texts_name_a_kind_never_the_bytes(data, kind):
    assert looks_like(data) == kind
    if data:
        with pytest.raises(Exception) as refused:
            open_image(data)
        assert str(refused.value) == f"not an image: format not recognised ({len(data)} bytes that look like {kind})"
        assert data[:8].decode("latin-1") not in str(refused.value)


def test_the_python_api_default_is_the_working_directory_and_base_uris(tiny_checkpoint, tmp_path, monkeypatch):
    from internvl_batch.api import Processor

    monkeypatch.chdir(tmp_path)
    processor = Processor({"model": {"path": str(tiny_checkpoint)}}, base_uri=str(tmp_path / "rows"))
    assert processor.config.fetch.local_roots == [str(tmp_path / "rows"), str(tmp_path)]
