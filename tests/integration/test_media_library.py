"""A media library captioned night after night, read as it is from a versioned S3 bucket (moto): no manifest,
a replaced object done again, a deleted one reported as an orphan, a config change stopped until the user
chooses, then reprocessed; one row per input throughout."""

import boto3
import pytest

from internvl_batch import job
from internvl_batch.config_loader import load_config
from internvl_batch.fingerprint import run_records
from internvl_batch.job import run_job
from internvl_batch.pipeline import results_dataset
from internvl_batch.results import read_results
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def put(s3, path, data):
    with s3.open(path, "wb") as f:
        f.write(data)


def test_nightly_runs_over_a_versioned_bucket(ray_local, s3, bucket, s3_endpoint, tiny_checkpoint, aws_env, capsys):
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    photo = encode(make_photo(64, 48), "JPEG")
    put(s3, f"{bucket}/lib/a.jpg", photo)
    put(s3, f"{bucket}/lib/2024/b.png", encode(make_photo(50, 40, seed=1), "PNG"))
    put(s3, f"{bucket}/lib/2024/c.jpg", encode(make_photo(40, 50, seed=2), "JPEG"))
    put(s3, f"{bucket}/lib/2024/readme.txt", b"not media")
    out = f"s3://{bucket}/captions"

    def config(**changes):
        base = {
            "input": {"media": f"s3://{bucket}/lib/"},
            "output": {"path": out, **changes.pop("output", {})},
            "model": {"path": str(tiny_checkpoint)},
            "generation": {"max_new_tokens": 3},
            "storage": {"endpoint_url": s3_endpoint},
            "resources": {"cpu_actors": 1, "gpu_replicas": 1},
            **changes,
        }
        return load_config(None, base=base)

    first = run_job(config())
    assert (first["rows_ok"], first["manifest"]["media_objects_skipped"], first["one_row_per_input"]) == (3, 1, True)
    rows = {r["id"]: r for r in read_results(out, config().storage).to_pylist()}
    assert sorted(rows) == ["2024/b.png", "2024/c.jpg", "a.jpg"]
    assert rows["a.jpg"]["media"] == [f"s3://{bucket}/lib/a.jpg"] and rows["a.jpg"]["source_version"].startswith(
        "etag="
    )
    assert len({r["config_fingerprint"] for r in rows.values()}) == 1  # one task, one config

    # The next night: b.png replaced, c.jpg deleted, a.jpg written again with the same bytes (same ETag).
    put(s3, f"{bucket}/lib/2024/b.png", encode(make_photo(52, 40, seed=3), "PNG"))
    s3.rm(f"{bucket}/lib/2024/c.jpg")
    put(s3, f"{bucket}/lib/a.jpg", photo)
    second = run_job(config())
    assert (second["rows_ok"], second["rows_already_done"]) == (1, 1)
    assert (second["results_changed_source"], second["results_orphaned"]) == (1, 1)
    assert second["one_row_per_input"]
    now = {r["id"]: r for r in read_results(out, config().storage).to_pylist()}
    assert now["2024/b.png"]["run_id"] == second["run_id"] != now["a.jpg"]["run_id"]
    assert now["2024/b.png"]["source_version"] != rows["2024/b.png"]["source_version"]
    assert sorted(now) == ["2024/b.png", "2024/c.jpg", "a.jpg"]  # nothing deleted
    current = read_results(out, config().storage, drop_orphans=True)
    assert sorted(current.column("id").to_pylist()) == ["2024/b.png", "a.jpg"]

    # Another prompt: the run stops before any work, naming the setting, until the user chooses.
    prompt = {"task": {"prompts": {"caption": "Describe the photo in five words."}}}
    assert job.main(config(**prompt)) == 2
    assert "changed: task.caption.prompt); set output.on_config_change=reprocess" in capsys.readouterr().err
    (stopped,) = [r for r in run_records(out, config().storage) if r["status"] != "finished" and "rows_ok" not in r]
    assert stopped["status"] == "stopped" and "ConfigChanged: 2 results" in stopped["error"]  # not left "running"
    third = run_job(config(**prompt, output={"on_config_change": "reprocess"}))
    assert (third["rows_ok"], third["results_stale_config"], third["results_orphaned"]) == (2, 2, 1)
    fourth = run_job(config(**prompt))  # the default again: everything current was made with this config
    assert (fourth["rows_ok"], fourth["rows_already_done"], fourth["results_stale_config"]) == (0, 2, 0)
    dataset = results_dataset(out, config().storage, columns=["id", "config_fingerprint"], drop_orphans=True)
    made = {r["id"]: r["config_fingerprint"] for r in dataset.take_all()}
    assert sorted(made) == ["2024/b.png", "a.jpg"] and made["a.jpg"] != rows["a.jpg"]["config_fingerprint"]
