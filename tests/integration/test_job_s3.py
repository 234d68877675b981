"""The whole job on a local Ray cluster against a real S3 endpoint (moto): manifest, media and output on S3."""

import io
import json

import pyarrow.parquet as pq
import pytest

from internvl_batch.config_loader import load_config
from internvl_batch.job import run_job
from internvl_batch.output_dir import report_path, runs_path, summary_path
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
    """One job over two manifests on S3: images (relative and absolute URIs, several per row, broken, missing),
    a malformed line, and video rows (sampled frames, a clip, an audio-only file, a clip outside the video);
    then rerun: resume, retry_errors, and resume=false."""
    from internvl_batch.results import read_results
    from tests.media import encode_audio_only, encode_video

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
    put(s3, f"{bucket}/v/clip30.mp4", encode_video(90, 30.0, gop=30))
    put(s3, f"{bucket}/v/clip25.mp4", encode_video(250, 25.0, gop=12))
    put(s3, f"{bucket}/v/audio.mp4", encode_audio_only())
    for name, size in {"a.jpg": (640, 480), "b.png": (1200, 300), "c.jpg": (300, 300)}.items():
        put(s3, f"{bucket}/i/{name}", encode(make_photo(*size), "JPEG" if name.endswith("jpg") else "PNG"))
    videos = [
        {"id": "v30", "video": "../v/clip30.mp4", "question": "What happens?"},
        {"id": "v25-bound", "video": "../v/clip25.mp4", "bound": [2.0, 6.0], "num_segments": 4},
        {"id": "v-audio", "video": "../v/audio.mp4"},
        {"id": "v-outside", "video": "../v/clip30.mp4", "bound": [10, 20]},
        {"id": "three", "images": ["../i/a.jpg", "../i/b.png", "../i/c.jpg"], "question": "Compare them."},
    ]
    put(s3, f"{bucket}/manifests/v.jsonl", "\n".join(json.dumps(r) for r in videos).encode())

    config = load_config(
        None,
        base={
            "input": {"manifests": f"s3://{bucket}/manifests/*.jsonl", "passthrough_columns": ["label"]},
            "output": {"path": f"s3://{bucket}/out", "max_error_fraction": 1.0},
            "model": {"path": str(tiny_checkpoint)},
            "generation": {"max_new_tokens": 6},
            "storage": {"endpoint_url": s3_endpoint},
            "resources": {"cpu_actors": 1, "cpu_batch_size": 2, "gpu_replicas": 1, "gpu_batch_size": 4},
        },
    )
    summary = run_job(config)

    rows = {r["id"]: r for r in read_output(s3, f"{bucket}/out")}
    assert sorted(rows) == sorted(["rel", "abs", "multi", "gone", "broken", "m.jsonl:6"] + [r["id"] for r in videos])
    for key in ("rel", "abs", "multi"):
        assert rows[key]["status"] == "ok" and rows[key]["response"] and rows[key]["num_output_tokens"] == 6
    assert rows["rel"]["num_tiles"] == [13] and rows["rel"]["media"] == [f"s3://{bucket}/images/photo.jpg"]
    assert rows["abs"]["question"] == "What is wide?" and rows["abs"]["label"] == "b"
    assert rows["multi"]["num_tiles"] == [1, 5]
    assert rows["gone"]["error"].startswith("fetch: FetchError:") and "not found" in rows["gone"]["error"]
    assert rows["broken"]["error"].startswith("decode: ImageDecodeError:")
    assert rows["m.jsonl:6"]["error"].startswith("manifest: ManifestError: line 6 is not valid JSON")

    v30 = rows["v30"]
    assert v30["status"] == "ok" and v30["response"] is not None and v30["num_frames"] == 8
    assert v30["frame_indices"] == [5, 16, 27, 38, 49, 61, 72, 83] and v30["num_tiles"] == [1] * 8
    assert rows["v25-bound"]["frame_indices"] == [62, 87, 112, 137]
    assert rows["v25-bound"]["frame_timestamps"] == [2.48, 3.48, 4.48, 5.48]
    assert rows["v-audio"]["error"] == "decode: VideoDecodeError: no video stream (audio-only or not a video container)"
    assert rows["v-outside"]["error"].startswith("decode: BoundError:")
    # Three images share max_num 12: a budget of 4 tiles each. 640x480 ties (1,1) with (2,2) and is too small
    # for the larger grid; 1200x300 is (4,1) + thumbnail; 300x300 is one tile.
    assert rows["three"]["status"] == "ok" and rows["three"]["num_tiles"] == [1, 5, 1]
    assert rows["three"]["num_frames"] is None and rows["rel"]["num_frames"] is None

    assert summary["rows_ok"] == 6 and summary["rows_failed"] == 5 and summary["one_row_per_input"]
    assert summary["images"] == 9  # 4 images, 3 of one row and 2 videos
    assert summary["output_tokens"] == sum(r["num_output_tokens"] or 0 for r in rows.values())
    with s3.open(summary_path(f"{bucket}/out")) as f:
        text = f.read().decode()
    stored = json.loads(text)
    assert stored["rows_ok"] == 6 and stored["config"]["storage"]["endpoint_url"] == s3_endpoint
    assert "versions" in stored and stored["versions"]["ray"]
    for secret in aws_env.values():
        if "secret" in secret or secret.startswith("AKIA"):
            assert secret not in text

    # Reruns: nothing left to do; then the missing object arrives and only the error rows are redone (the ok rows
    # keep their first run's result); then --no-resume discards everything and starts over.
    again = run_job(config)
    assert (again["rows_processed"], again["rows_already_done"]) == (0, 11)
    put(s3, f"{bucket}/images/absent.jpg", encode(make_photo(32, 32), "PNG"))
    retried = run_job(config.model_copy(update={"output": config.output.model_copy(update={"retry_errors": True})}))
    assert (retried["rows_processed"], retried["rows_ok"], retried["rows_already_done"]) == (5, 1, 6)
    current = {r["id"]: r for r in read_results(f"s3://{bucket}/out", config.storage).to_pylist()}
    assert current["gone"]["status"] == "ok" and current["rel"]["run_id"] == summary["run_id"]
    assert current["broken"]["run_id"] == retried["run_id"] and current["broken"]["status"] == "error"
    # The report of this output, made from S3 (results and media) and written there: a resumed run's.
    from internvl_batch.report import write_report

    assert write_report(f"s3://{bucket}/out", config.storage, fetch=config.fetch) == report_path(f"s3://{bucket}/out")
    s3.invalidate_cache()
    with s3.open(report_path(f"{bucket}/out"), "rb") as f:
        page = f.read().decode()
    assert "resumed: 6 results were already done" in page and "data:image/jpeg;base64," in page
    assert page.count("<figure class='row'") == 7 and "data-stage='decode'" in page
    fresh = run_job(config.model_copy(update={"output": config.output.model_copy(update={"resume": False})}))
    assert fresh["rows_processed"] == 11 and fresh["rows_ok"] == 7
    s3.invalidate_cache()  # listings of the output made above are cached by s3fs
    assert len([f for f in s3.find(f"{bucket}/out") if f.endswith(".parquet")]) == 1  # earlier results discarded
    assert len(s3.ls(runs_path(f"{bucket}/out"))) == 4  # one summary per run


def test_parquet_dataset_webdataset_shards_and_http_media(ray_local, s3, bucket, s3_endpoint, tiny_checkpoint):
    """One job over a Hugging Face-style Parquet dataset on S3 (a prefix of shards, images inside as {bytes, path}
    structs, the image column named `picture`, one row whose image is an HTTP URL) and WebDataset tar shards on
    S3 (read streaming; one of them cut short)."""
    import pyarrow as pa

    from tests.media_server import MediaServer
    from tests.unit.manifest.test_webdataset import sample, shard

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("id", pa.string()), ("picture", struct), ("label", pa.string())])
    with MediaServer({"/web.jpg": encode(make_photo(500, 400, seed=9), "JPEG")}) as web:
        rows = [
            {
                "id": f"r{i}",
                "picture": {"bytes": encode(make_photo(480, 360, seed=i), "JPEG"), "path": f"{i}.jpg"},
                "label": f"L{i}",
            }
            for i in range(4)
        ]
        rows.append({"id": "url", "picture": {"bytes": None, "path": f"{web.url}/web.jpg"}, "label": "web"})
        rows.append({"id": "broken", "picture": {"bytes": b"not an image", "path": "x.jpg"}, "label": "bad"})
        for number, part in enumerate((rows[:3], rows[3:])):
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(part, schema), buffer)
            put(s3, f"{bucket}/ds/train-{number:05d}-of-00002.parquet", buffer.getvalue())
        put(s3, f"{bucket}/ds/dataset_info.json", b"{}")
        put(s3, f"{bucket}/wds/shard-0.tar", shard([sample("w0", 20, label="wds"), sample("w1", 21, label="wds")]))
        cut = shard([sample("w2", 22), sample("w3", 23)])
        put(s3, f"{bucket}/wds/shard-1.tar", cut[: len(cut) * 3 // 4])
        summary = run_job(
            load_config(
                None,
                base={
                    "input": {
                        "manifests": [f"s3://{bucket}/ds", f"s3://{bucket}/wds/*.tar"],
                        "image_column": "picture",
                        "passthrough_columns": ["label"],
                    },
                    "output": {"path": f"s3://{bucket}/out", "max_error_fraction": 1.0},
                    "model": {"path": str(tiny_checkpoint)},
                    "generation": {"max_new_tokens": 3},
                    "storage": {"endpoint_url": s3_endpoint},
                    "fetch": {"allow_private_networks": True},
                    "resources": {"cpu_actors": 1, "gpu_replicas": 1},
                },
            )
        )
        assert web.hits["/web.jpg"] == 1
    out = {r["id"]: r for r in read_output(s3, f"{bucket}/out")}
    assert (
        sorted(out) == sorted([r["id"] for r in rows] + ["w0", "w1", "w2", "shard-1.tar:2"]) and summary["rows_ok"] == 8
    )
    assert (
        out["w1"]["status"] == "ok"
        and out["w1"]["label"] == "wds"
        and out["w1"]["media"][0].endswith("shard-0.tar:2#1:w1.jpg")
    )
    assert "shard-1.tar is truncated or corrupt" in out["shard-1.tar:2"]["error"]
    assert out["r0"]["media"] == [f"s3://{bucket}/ds/train-00000-of-00002.parquet:1#1:0.jpg"]
    assert out["url"]["media"] == [f"{web.url}/web.jpg"] and out["url"]["status"] == "ok"
    assert out["broken"]["error"].startswith("decode: ImageDecodeError: not an image") and out["r3"]["label"] == "L3"
    files = [f for f in s3.find(f"{bucket}/out") if f.endswith(".parquet")]
    with s3.open(files[0], "rb") as handle:
        written = pq.read_schema(io.BytesIO(handle.read()))
    assert "picture" not in written.names and not any(
        pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in written
    )
