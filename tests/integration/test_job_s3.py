"""The whole job on a local Ray cluster against a real S3 endpoint (moto): manifest, media and output on S3."""

import io
import json

import pyarrow.parquet as pq
import pytest

from internvl_batch.config_loader import load_config
from internvl_batch.job import run_job
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def put(s3, path, data):
    with s3.open(path, "wb") as f:
        f.write(data)


def read_output(s3, prefix):
    files = [f for f in s3.find(prefix) if f.endswith(".parquet")]
    rows = []
    for f in files:
        with s3.open(f, "rb") as handle:
            rows += pq.read_table(io.BytesIO(handle.read())).to_pylist()
    return rows


def test_job_reads_and_writes_s3(ray_local, s3, bucket, s3_endpoint, tiny_checkpoint, aws_env):
    put(s3, f"{bucket}/images/photo.jpg", encode(make_photo(800, 600), "JPEG", exif_orientation=6))
    put(s3, f"{bucket}/images/wide.png", encode(make_photo(1000, 250, seed=1), "PNG"))
    put(s3, f"{bucket}/images/small.png", encode(make_photo(300, 300, seed=2), "PNG"))
    put(s3, f"{bucket}/images/broken.jpg", encode(make_photo(400, 300), "JPEG")[:500])
    manifest = [
        {"id": "rel", "image": "../images/photo.jpg", "label": "a"},
        {"id": "abs", "image": f"s3://{bucket}/images/wide.png", "question": "What is wide?", "label": "b"},
        {"id": "multi", "images": ["../images/small.png", "../images/wide.png"], "label": "c"},
        {"id": "gone", "image": "../images/absent.jpg"},
        {"id": "broken", "image": "../images/broken.jpg"},
    ]
    put(s3, f"{bucket}/manifests/m.jsonl", "\n".join(json.dumps(r) for r in manifest).encode() + b"\n{bad json\n")

    config = load_config(None, base={
        "input": {"manifests": f"s3://{bucket}/manifests/*.jsonl", "passthrough_columns": ["label"]},
        "output": {"path": f"s3://{bucket}/out"},
        "model": {"path": str(tiny_checkpoint)},
        "generation": {"max_new_tokens": 6},
        "storage": {"endpoint_url": s3_endpoint},
        "resources": {"cpu_actors": 1, "cpu_batch_size": 2, "gpu_replicas": 1, "gpu_batch_size": 4},
    })  # fmt: skip
    summary = run_job(config)

    rows = {r["id"]: r for r in read_output(s3, f"{bucket}/out")}
    assert sorted(rows) == sorted(["rel", "abs", "multi", "gone", "broken", "m.jsonl:6"])
    for key in ("rel", "abs", "multi"):
        assert rows[key]["status"] == "ok" and rows[key]["response"] and rows[key]["num_output_tokens"] == 6
    assert rows["rel"]["num_tiles"] == [13] and rows["rel"]["media"] == [f"s3://{bucket}/images/photo.jpg"]
    assert rows["abs"]["question"] == "What is wide?" and rows["abs"]["label"] == "b"
    assert rows["multi"]["num_tiles"] == [1, 5]
    assert rows["gone"]["error"].startswith("fetch: FetchError:") and "not found" in rows["gone"]["error"]
    assert rows["broken"]["error"].startswith("decode: ImageDecodeError:")
    assert rows["m.jsonl:6"]["error"].startswith("manifest: ManifestError: line 6 is not valid JSON")

    assert summary["rows_ok"] == 3 and summary["rows_failed"] == 3 and summary["one_row_per_input"]
    assert summary["images"] == 4 and summary["output_tokens"] == 18
    with s3.open(f"{bucket}/out/_summary.json") as f:
        text = f.read().decode()
    stored = json.loads(text)
    assert stored["rows_ok"] == 3 and stored["config"]["storage"]["endpoint_url"] == s3_endpoint
    assert "versions" in stored and stored["versions"]["ray"]
    for secret in aws_env.values():
        if "secret" in secret or secret.startswith("AKIA"):
            assert secret not in text


def test_rerun_refuses_to_mix_results_unless_overwrite(ray_local, s3, bucket, s3_endpoint, tiny_checkpoint):
    put(s3, f"{bucket}/m.jsonl", b'{"id": "x", "image": "x.png"}\n')
    put(s3, f"{bucket}/x.png", encode(make_photo(64, 64), "PNG"))
    base = {"input": {"manifests": f"s3://{bucket}/m.jsonl"}, "output": {"path": f"s3://{bucket}/o"},
            "model": {"path": str(tiny_checkpoint)}, "generation": {"max_new_tokens": 2},
            "storage": {"endpoint_url": s3_endpoint}, "resources": {"cpu_actors": 1, "gpu_replicas": 1}}  # fmt: skip
    run_job(load_config(None, base=base))
    from internvl_batch.errors import ConfigError

    with pytest.raises(ConfigError, match="already holds 1 result files"):
        run_job(load_config(None, base=base))
    summary = run_job(load_config(None, ["output.overwrite=true"], base=base))
    assert summary["rows_output"] == 1 and len(read_output(s3, f"{bucket}/o")) == 1
