"""gs:// for manifests, media, model and output, against a real local GCS emulator (gcp-storage-emulator from
PyPI, its server started on 127.0.0.1 by this module and stopped by process id)."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.config_loader import load_config
from internvl_batch.errors import FetchError
from internvl_batch.filesystems import gcs_filesystem
from internvl_batch.job import run_job
from internvl_batch.storage import MediaFetcher
from tests.integration.conftest import free_port
from tests.integration.media_roots import check_media_root
from tests.integration.ranged_video import check_ranged_video
from tests.media import encode, make_photo
from tests.unit.imaging.test_ranged_video import h264

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def gcs_endpoint(tmp_path_factory):
    port = free_port()
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    log = open(tmp_path_factory.mktemp("gcs") / "emulator.log", "wb")
    proc = subprocess.Popen(
        [str(exe), "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                import urllib.request

                urllib.request.urlopen(f"{endpoint}/storage/v1/b?project=test", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the GCS emulator did not start")
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own process group: only what this fixture started
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def gcs(gcs_endpoint):
    storage = StorageConfig(gcs_endpoint_url=gcs_endpoint, anonymous=True)
    fs = gcs_filesystem(storage)
    fs.mkdir("media-bucket")
    return storage, fs


def test_media_fetch_and_errors(gcs):
    storage, fs = gcs
    fs.pipe("media-bucket/m/photo.jpg", b"jpeg bytes")
    fetcher = MediaFetcher(storage, FetchConfig(retries=1, backoff_s=0.01))
    assert fetcher.fetch("gs://media-bucket/m/photo.jpg") == b"jpeg bytes"
    with pytest.raises(FetchError, match="gs://media-bucket/m/absent.jpg: not found"):
        fetcher.fetch("gs://media-bucket/m/absent.jpg")


def test_job_on_gcs(ray_local, gcs, gcs_endpoint, tiny_checkpoint):
    storage, fs = gcs
    for name in ("a.jpg", "b.jpg"):
        fs.pipe(f"media-bucket/job/img/{name}", encode(make_photo(400, 300, seed=len(name)), "JPEG"))
    for path in Path(tiny_checkpoint).iterdir():  # the model from gs:// too, staged once per node
        fs.pipe(f"media-bucket/models/tiny/{path.name}", path.read_bytes())
    rows = [
        {"id": "a", "image": "img/a.jpg"},
        {"id": "b", "image": "img/b.jpg"},
        {"id": "gone", "image": "img/gone.jpg"},
    ]
    fs.pipe("media-bucket/job/m.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    summary = run_job(
        load_config(
            None,
            base={
                "input": {"manifests": "gs://media-bucket/job/*.jsonl"},
                "output": {"path": "gs://media-bucket/job/out", "max_error_fraction": 1.0},
                "model": {
                    "path": "gs://media-bucket/models/tiny",
                    "cache_dir": str(Path(tiny_checkpoint).parent / "gcs-cache"),
                },
                "generation": {"max_new_tokens": 3},
                "storage": storage.model_dump(),
                "resources": {"cpu_actors": 1, "gpu_replicas": 1},
            },
        )
    )
    assert summary["rows_ok"] == 2 and summary["one_row_per_input"]
    out = []
    for file in fs.find("media-bucket/job/out"):
        if file.endswith(".parquet"):
            out += pq.read_table(io.BytesIO(fs.cat(file))).to_pylist()
    by_id = {r["id"]: r for r in out}
    assert sorted(by_id) == ["a", "b", "gone"]
    assert by_id["a"]["media"] == ["gs://media-bucket/job/img/a.jpg"] and by_id["a"]["status"] == "ok"
    assert by_id["gone"]["error"] == "fetch: FetchError: gs://media-bucket/job/img/gone.jpg: not found"


def test_a_missing_extra_is_one_clear_line(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["gcsfs"] = None  # as if the gcs extra were not installed
        from internvl_batch.job import main
        from internvl_batch.config_loader import load_config
        config = load_config(None, base={"input": {"manifests": "gs://bucket/m.jsonl"},
                                         "output": {"path": sys.argv[1]}, "model": {"path": "tiny"}})
        sys.exit(main(config=config))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "internvl-batch: error: reading gs:// needs gcsfs: pip install 'internvl-batch[gcs]'"


def test_a_media_root_on_gcs_is_listed_with_object_generations(gcs, tmp_path):
    """`input.media` on gs://: one row per object below the root, its version the object's generation."""
    storage, fs = gcs
    check_media_root(
        fs, "media-bucket/lib", "gs://media-bucket/lib/", str(tmp_path / "out"), "generation=", storage.model_dump()
    )


def test_an_mp4_on_gcs_is_read_in_byte_ranges(gcs, tmp_path):
    """`video.ranged_reads` on gs:// (gcsfs's block reads, the object's generation as its tag)."""
    storage, fs = gcs
    data = h264(tmp_path / "v.mp4", n=320, gop=25, bframes=2, w=320, h=240)
    check_ranged_video(fs, "media-bucket/v/clip.mp4", "gs://media-bucket/v/clip.mp4", storage, data)
