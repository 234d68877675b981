"""One check of a media root on an object store, shared by the emulators' tests (GCS, Azure): listed on the
read path (`read_manifests`), ids below the root, other suffixes skipped, each object's version the store's,
and a rewritten object's version changed on the next listing by the same process."""

from internvl_batch.config_loader import load_config
from internvl_batch.manifest.local import read_manifests
from tests.media import encode, make_photo


def check_media_root(fs, bucket_path: str, uri: str, output: str, version: str, storage: dict | None = None) -> None:
    """`fs`: the store's fsspec filesystem; `bucket_path` its path of the root (`bucket/lib`), `uri` the same
    as `input.media` gives it (`gs://bucket/lib/`); `version`: what the store's versions start with."""
    fs.pipe(f"{bucket_path}/a.jpg", encode(make_photo(40, 30), "JPEG"))
    fs.pipe(f"{bucket_path}/2024/07/b.png", encode(make_photo(30, 40), "PNG"))
    fs.pipe(f"{bucket_path}/2024/notes.txt", b"not media")
    base = {"input": {"media": uri}, "output": {"path": output}, "model": {"path": "tiny"}}
    config = load_config(None, base=base | ({"storage": storage} if storage else {}))
    table, _, report = read_manifests(config)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["2024/07/b.png", "a.jpg"] and report["media_objects_skipped"] == 1
    assert rows["a.jpg"]["media"] == [f"{uri.rstrip('/')}/a.jpg"]
    assert version in rows["a.jpg"]["source_version"]
    fs.pipe(f"{bucket_path}/a.jpg", encode(make_photo(41, 30), "JPEG"))
    again = {r["id"]: r for r in read_manifests(config)[0].to_pylist()}
    assert again["a.jpg"]["source_version"] != rows["a.jpg"]["source_version"]
    assert again["2024/07/b.png"]["source_version"] == rows["2024/07/b.png"]["source_version"]
