"""Inputs written by the tools users have: the real img2dataset's output folders (webdataset and parquet), and
Hugging Face / WebDataset layouts read from a real S3 endpoint (moto), through the job's own manifest passes.

img2dataset pins its own dependencies (pandas < 3, ...), so it runs from a virtual environment of its own,
made under .cache/img2dataset-venv on first use (as tests/integration/test_azure.py installs Azurite), and
downloads from a local HTTP server (tests/media_server.py): nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from internvl_batch.config_loader import load_config
from internvl_batch.manifest.local import read_manifests
from internvl_batch.passthrough import carried
from tests.media import encode, make_photo
from tests.media_server import MediaServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IMG2DATASET_VENV = REPO / ".cache" / "img2dataset-venv"


def photo(seed: int) -> bytes:
    return encode(make_photo(120, 90, seed=seed), "JPEG")


def img2dataset() -> Path:
    """The img2dataset command, installed with pip into its own venv on first use (a marker file says the install
    finished: a venv cannot be moved into place, so an interrupted one is made again)."""
    command, done = IMG2DATASET_VENV / "bin" / "img2dataset", IMG2DATASET_VENV / ".installed"
    if command.exists() and done.exists():
        return command
    shutil.rmtree(IMG2DATASET_VENV, ignore_errors=True)
    IMG2DATASET_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(IMG2DATASET_VENV)], check=True, timeout=300)
    pip = [str(IMG2DATASET_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "img2dataset"]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=900)
    if installed.returncode != 0:
        shutil.rmtree(IMG2DATASET_VENV, ignore_errors=True)
        last = (installed.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"pip could not install img2dataset into {IMG2DATASET_VENV}: {last}")
    done.write_text("img2dataset\n")
    return command


def read(manifests, storage=None, **input_options):
    config = load_config(
        None,
        base={
            "input": {"manifests": manifests, **input_options},
            "output": {"path": "unused"},
            "model": {"path": "tiny"},
            "storage": storage or {},
        },
    )
    table, totals, _ = read_manifests(config)
    return (table.to_pylist() if table is not None else []), totals


@pytest.mark.slow
@pytest.mark.parametrize("output_format", ["webdataset", "parquet"])
def test_img2dataset_output_folder(tmp_path, output_format):
    command = img2dataset()
    images = {f"/img/{i}.jpg": photo(i) for i in range(4)}
    with MediaServer(images) as server:
        urls = tmp_path / "urls.tsv"
        lines = ["url\tcaption"] + [
            f"{server.url}/img/{name}.jpg\tcaption {name}" for name in ("0", "1", "missing", "3")
        ]  # one URL answers 404: img2dataset records it as failed_to_download
        urls.write_text("\n".join(lines) + "\n")
        out = tmp_path / "out"
        subprocess.run(
            [str(command), "--url_list", str(urls), "--input_format", "tsv", "--url_col", "url"]
            + ["--caption_col", "caption", "--output_format", output_format, "--output_folder", str(out)]
            + ["--processes_count", "1", "--thread_count", "2", "--resize_mode", "no", "--skip_reencode", "True"]
            + ["--enable_wandb", "False"]
            + ["--number_sample_per_shard", "2", "--distributor", "multiprocessing"],
            check=True,
            capture_output=True,
            timeout=300,
            cwd=tmp_path,
        )
    names = sorted(p.name for p in out.iterdir())
    # The Parquet files: metadata beside each tar shard (webdataset), or the shards themselves (parquet).
    metadata = [row for n in names if n.endswith(".parquet") for row in pq.read_table(out / n).to_pylist()]
    if output_format == "webdataset":
        assert {"00000.tar", "00000.parquet", "00000_stats.json", "00001.tar", "00001.parquet"} <= set(names)
        rows, totals = read(str(out), passthrough_columns=["txt", "url"])
    else:
        assert {"00000.parquet", "00000_stats.json", "00001.parquet"} <= set(names) and not any(
            ".tar" in n for n in names
        )
        rows, totals = read(str(out), id_column="key", image_column="jpg", passthrough_columns=["caption", "url"])
    served = {f"{server.url}{path}": data for path, data in images.items()}
    succeeded = {m["key"]: m["url"] for m in metadata if m["status"] == "success"}
    assert len(succeeded) == 3
    good = {r["id"]: r for r in rows if r["error"] is None}
    assert sorted(good) == sorted(succeeded)
    for key, row in good.items():
        assert row["media_data"] == [served[succeeded[key]]]  # the downloaded bytes, unchanged (skip_reencode)
        assert row[carried("url")] == succeeded[key]
    text = "txt" if output_format == "webdataset" else "caption"
    assert {good[k][carried(text)] for k in good} == {"caption 0", "caption 1", "caption 3"}
    if output_format == "webdataset":
        assert totals.rows == 3  # failed downloads are not in the shards; the metadata Parquet is not read
    else:
        failed = [r for r in rows if r["error"] is not None]
        assert [r["id"] for r in failed] == [m["key"] for m in metadata if m["status"] != "success"]
        assert failed[0]["error"] == "manifest: ManifestError: row has none of `image`, `images`, `video`, `document`"


def test_hugging_face_and_webdataset_layouts_on_s3(tmp_path, s3, bucket, s3_endpoint):
    """save_to_disk folders, Hub repository roots and brace ranges of shards, listed and read through s3fs."""
    data = {"uid": ["a", "b", "c"], "image": [{"bytes": photo(i), "path": f"{i}.jpg"} for i in range(3)]}
    dataset = datasets.Dataset.from_dict(data).cast_column("image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"), num_shards=2)
    (tmp_path / "repo" / "data").mkdir(parents=True)
    (tmp_path / "repo" / "README.md").write_text("---\nlicense: mit\n---\n")
    dataset.to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    (tmp_path / "shards").mkdir()
    with wds.ShardWriter(str(tmp_path / "shards" / "shard-%06d.tar"), maxcount=2, verbose=0) as sink:
        for i in range(3):
            sink.write({"__key__": f"k{i}", "jpg": photo(i), "cls": i})
    s3.put(str(tmp_path) + "/", f"{bucket}/in/", recursive=True)
    storage = {"endpoint_url": s3_endpoint}

    rows, _ = read(f"s3://{bucket}/in/saved", storage, id_column="uid")
    assert [r["id"] for r in rows] == ["a", "b", "c"] and [r["media_data"][0] for r in rows] == [
        photo(i) for i in range(3)
    ]
    assert rows[2]["media"] == [f"s3://{bucket}/in/saved/data-00001-of-00002.arrow:1#1:2.jpg"]
    split, _ = read(f"s3://{bucket}/in/saved", storage, id_column=None, split_bytes=1)
    assert [r["id"] for r in split] == ["data-00000-of-00002.arrow:1", "data-00000-of-00002.arrow:2"] + [
        "data-00001-of-00002.arrow:1"
    ]
    rows, _ = read(f"s3://{bucket}/in/repo", storage, id_column="uid")
    assert [r["id"] for r in rows] == ["a", "b", "c"] and all(r["error"] is None for r in rows)
    rows, _ = read(f"s3://{bucket}/in/shards/shard-{{000000..000001}}.tar", storage, passthrough_columns=["cls"])
    assert [(r["id"], r[carried("cls")]) for r in rows] == [("k0", 0), ("k1", 1), ("k2", 2)]
    with pytest.raises(Exception, match=r"1 of the 3 files it names do not exist \(shard-000002.tar\)"):
        read(f"s3://{bucket}/in/shards/shard-{{000000..000002}}.tar", storage)
