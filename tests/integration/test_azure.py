"""az:// for manifests, media, model and output, against Azurite (the npm package, installed under .cache/ by
this module on first use, its blob server started on 127.0.0.1 and stopped by process group). The account
comes from the environment (AZURE_STORAGE_CONNECTION_STRING), as on a real cluster."""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.config_loader import load_config
from internvl_batch.errors import FetchError
from internvl_batch.filesystems import azure_filesystem
from internvl_batch.job import run_job
from internvl_batch.storage import MediaFetcher
from tests.integration.conftest import free_port, start_shared_ray
from tests.integration.media_roots import check_media_root
from tests.integration.ranged_video import check_ranged_video
from tests.media import encode, make_photo
from tests.unit.imaging.test_ranged_video import h264

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
AZURITE_DIR = REPO / ".cache" / "azurite"
# Azurite's documented development account (a public, well-known test key, not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_blob() -> Path:
    """The azurite-blob command, installed with npm under .cache/azurite on first use."""
    command = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not command.exists():
        npm = shutil.which("npm")
        assert npm, "the Azure tests need npm (Node.js) to install Azurite"
        AZURITE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(AZURITE_DIR), "--no-audit", "--no-fund", "--silent", "azurite@3"],
            check=True,
            timeout=600,
        )
    return command


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    """Azurite on 127.0.0.1, its connection string in the environment, and the shared local Ray cluster started
    after it (Ray's workers take the environment they start with)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(azurite_blob()),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(tmp_path_factory.mktemp("azurite")),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    saved = {k: os.environ.get(k) for k in ("AZURE_STORAGE_CONNECTION_STRING",)}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "Azurite did not start"
                time.sleep(0.2)
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
        )
        # Ray's workers take the environment they start with: the shared cluster is started (again, if it is up)
        # now that the connection string is set, and the modules after this one keep using it.
        start_shared_ray()
        fs = azure_filesystem(StorageConfig())
        fs.mkdir("media")
        yield fs
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_job_on_azure(azure, ray_local, tiny_checkpoint):
    fs = azure
    for name in ("a.jpg", "b.jpg"):
        fs.pipe(f"media/job/img/{name}", encode(make_photo(400, 300, seed=len(name) + 3), "JPEG"))
    for path in Path(tiny_checkpoint).iterdir():
        fs.pipe(f"media/models/tiny/{path.name}", path.read_bytes())
    rows = [
        {"id": "a", "image": "img/a.jpg"},
        {"id": "b", "image": "az://media/job/img/b.jpg"},
        {"id": "gone", "image": "img/gone.jpg"},
    ]
    fs.pipe("media/job/m.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    fetcher = MediaFetcher(StorageConfig(), FetchConfig(retries=0))
    assert fetcher.fetch("az://media/job/img/a.jpg")[:2] == b"\xff\xd8"  # a JPEG
    with pytest.raises(FetchError, match="az://media/job/img/gone.jpg: not found"):
        fetcher.fetch("az://media/job/img/gone.jpg")
    summary = run_job(
        load_config(
            None,
            base={
                "input": {"manifests": "az://media/job/*.jsonl"},
                "output": {"path": "az://media/job/out", "max_error_fraction": 1.0},
                "model": {
                    "path": "az://media/models/tiny",
                    "cache_dir": str(Path(tiny_checkpoint).parent / "azure-cache"),
                },
                "generation": {"max_new_tokens": 3},
                "resources": {"cpu_actors": 1, "gpu_replicas": 1},
            },
        )
    )
    assert summary["rows_ok"] == 2 and summary["one_row_per_input"]
    out = []
    for file in fs.find("media/job/out"):
        if file.endswith(".parquet"):
            out += pq.read_table(io.BytesIO(fs.cat(file))).to_pylist()
    by_id = {r["id"]: r for r in out}
    assert sorted(by_id) == ["a", "b", "gone"] and by_id["a"]["status"] == by_id["b"]["status"] == "ok"
    assert by_id["a"]["media"] == ["az://media/job/img/a.jpg"]
    assert by_id["gone"]["error"] == "fetch: FetchError: az://media/job/img/gone.jpg: not found"


def test_a_media_root_on_azure_is_listed_with_etags(azure, tmp_path):
    """`input.media` on az:// (Azurite): one row per blob below the root, its version the blob's ETag; the second
    listing in the same process sees the rewrite (the filesystem's listing cache is dropped)."""
    check_media_root(azure, "media/lib", "az://media/lib", str(tmp_path / "out"), "etag=")


def test_an_mp4_on_azure_is_read_in_byte_ranges(azure, tmp_path):
    """`video.ranged_reads` on az:// (adlfs's block reads, the blob's ETag as its tag)."""
    data = h264(tmp_path / "v.mp4", n=320, gop=25, bframes=2, faststart=True, w=320, h=240)
    check_ranged_video(azure, "media/v/clip.mp4", "az://media/v/clip.mp4", StorageConfig(), data)
