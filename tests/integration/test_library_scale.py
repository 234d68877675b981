"""Library scale on a real local Ray cluster: manifests read on the workers (JSONL byte ranges, CSV, Parquet
row groups), duplicate ids found by the distributed pass, resume from hashed keys, the one-row-per-input
check from counts and checksums, a large output read as a Ray Dataset, and the Python API on a user's
dataset."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from internvl_batch.config_loader import load_config
from internvl_batch.errors import ConfigError
from internvl_batch.job import run_job
from internvl_batch.output_dir import read_summary
from internvl_batch.results import read_results, write_result_file
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def manifests(root):
    """Three formats, 61 rows, 2 real images, one malformed JSONL line, one blank line, and `d1`/`d2` repeated."""
    (root / "media").mkdir()
    for name in ("a", "b"):
        (root / "media" / f"{name}.jpg").write_bytes(encode(make_photo(64, 64, seed=ord(name)), "JPEG"))  # one tile
    lines = [json.dumps({"id": f"j{i}", "image": "media/missing.jpg", "n": i}) for i in range(30)]
    lines[3] = json.dumps({"id": "d1", "image": "media/a.jpg", "n": 3})
    lines[10] = "{not json"
    lines[11] = ""
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    csv = ["id,image,n"] + [f"c{i},media/missing.jpg,{i}" for i in range(15)] + ["d1,media/b.jpg,99"]
    (root / "b.csv").write_text("\n".join(csv) + "\n")
    table = pa.table(
        {
            "id": [f"p{i}" for i in range(14)] + ["d2", "d2"],
            "image": ["media/b.jpg"] + ["media/missing.jpg"] * 15,
            "n": list(range(16)),
        }
    )
    pq.write_table(table, root / "c.parquet", row_group_size=3)
    return [str(root / "a.jsonl"), str(root / "b.csv"), str(root / "c.parquet")]


def test_sharded_manifests_duplicates_and_resume(ray_local, tmp_path, tiny_checkpoint):
    base = {
        "input": {
            "manifests": manifests(tmp_path),
            "split_bytes": 300,
            "duplicate_ids": "keep_first",
            "passthrough_columns": ["n"],
        },
        "output": {"path": str(tmp_path / "out"), "max_error_fraction": 1.0, "rows_per_file": 7},
        "model": {"path": str(tiny_checkpoint)},
        "generation": {"max_new_tokens": 3},
        "resources": {"cpu_actors": 1, "gpu_replicas": 1, "rows_per_block": 5},
    }
    first = run_job(load_config(None, ["resources.wave_rows=30"], base=base))  # in waves: several Ray Data runs
    current = {r["id"]: r for r in read_results(str(tmp_path / "out")).to_pylist()}
    assert len(current) == 59 and first["rows_input"] == 59 and first["rows_processed"] == 59
    assert current["d1"]["media"] == [str(tmp_path / "media" / "a.jpg")] and current["d1"]["status"] == "ok"
    # The first occurrence, in manifest order; `n` is JSON text, since the formats give it different types.
    assert current["d1"]["n"] == "3" and current["d2"]["n"] == "14" and current["c1"]["n"] == '"1"'
    assert current["a.jsonl:11"]["error"].startswith("manifest: ManifestError: line 11 is not valid JSON")
    assert current["p0"]["status"] == "ok" and current["c3"]["error"].startswith("fetch: FetchError:")
    assert first["one_row_per_input"] and first["missing_ids"] == []
    assert first["manifest"]["duplicate_ids"] == 2 and first["manifest"]["duplicate_id_examples"] == ["d1", "d2"]
    assert (first["manifest"]["blank_lines"], first["manifest"]["malformed_rows"]) == (1, 1)
    assert (first["rows_ok"], first["images"], first["errors_by_stage"]) == (2, 2, {"fetch": 56, "manifest": 1})

    again = run_job(load_config(None, base=base))
    assert (again["rows_processed"], again["rows_already_done"], again["one_row_per_input"]) == (0, 59, True)

    files_before = sorted(p.name for p in (tmp_path / "out").rglob("part-*"))
    with pytest.raises(ConfigError, match=r"2 ids appear more than once \(e.g. d1, d2\)"):
        run_job(load_config(None, ["input.duplicate_ids=error"], base=base))
    assert sorted(p.name for p in (tmp_path / "out").rglob("part-*")) == files_before  # stopped before any model work

    retried = run_job(load_config(None, ["output.retry_errors=true", "task.name=caption"], base=base))
    assert retried["rows_processed"] == 57 and retried["rows_already_done"] == 2 and retried["one_row_per_input"]


def test_missing_results_are_named(ray_local, tmp_path, tiny_checkpoint, monkeypatch):
    """If a result goes missing on the way (simulated: the job's chain ends in a writer that drops a row), the
    summary says which."""
    from dataclasses import replace

    import internvl_batch.pipeline.dataset as dataset
    import internvl_batch.stages.write as write
    from internvl_batch.pipeline.chain import MODEL_CHAIN, WRITE

    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "image": "x.jpg"}) + "\n" for i in range(6)))
    config = load_config(
        None,
        base={
            "input": {"manifests": str(tmp_path / "m.jsonl")},
            "output": {"path": str(tmp_path / "out"), "max_error_fraction": 1.0},
            "model": {"path": str(tiny_checkpoint)},
            "resources": {"cpu_actors": 1},
        },
    )

    class LossyWriteStage(write.WriteStage):  # defined here, so pickled by value into the writer actors
        def __call__(self, batch):
            return super().__call__(batch.filter(pa.array([i != "r4" for i in batch.column("id").to_pylist()])))

    monkeypatch.setattr(dataset, "JOB_CHAIN", (*MODEL_CHAIN, replace(WRITE, stage=LossyWriteStage)))
    from internvl_batch.errors import JobFailed

    with pytest.raises(JobFailed, match=r"input ids have no result \(e.g. \['r4 \(caption\)'\]\)"):
        run_job(config)
    summary = read_summary(tmp_path / "out")
    assert summary["one_row_per_input"] is False and summary["missing_ids"] == ["r4 (caption)"]
    assert summary["rows_processed"] == 5 and summary["results_expected"] == 6


def test_results_dataset_keeps_the_latest_row(ray_local, tmp_path):
    from internvl_batch.config import StorageConfig
    from internvl_batch.pipeline import results_dataset
    from internvl_batch.stages.output import OUTPUT_SCHEMA

    def rows(run_id, keys, status):
        table = pa.table(
            {
                "id": [k[0] for k in keys],
                "task": [k[1] for k in keys],
                "status": [status] * len(keys),
                "run_id": [run_id] * len(keys),
            }
        )
        return table

    out = str(tmp_path / "out")
    (tmp_path / "out").mkdir()
    write_result_file(
        rows("20260101T000000000000Z-aaaaaa", [("x", "caption"), ("y", "caption"), ("z", "ocr")], "error"),
        out,
        StorageConfig(),
        "20260101T000000000000Z-aaaaaa",
    )
    write_result_file(
        rows("20260102T000000000000Z-bbbbbb", [("x", "caption"), ("z", "caption")], "ok"),
        out,
        StorageConfig(),
        "20260102T000000000000Z-bbbbbb",
    )
    write_result_file(
        rows("20260102T000000000000Z-bbbbbb", [("x", "caption")], "ok"),
        out,
        StorageConfig(),
        "20260102T000000000000Z-bbbbbb",
    )
    expected = sorted((r["id"], r["task"], r["status"], r["run_id"]) for r in read_results(out).to_pylist())
    got = sorted((r["id"], r["task"], r["status"], r["run_id"]) for r in results_dataset(out).take_all())
    assert got == expected and len(got) == 4
    assert ("x", "caption", "ok", "20260102T000000000000Z-bbbbbb") in got and (
        "y",
        "caption",
        "error",
        "20260101T000000000000Z-aaaaaa",
    ) in got
    assert OUTPUT_SCHEMA  # the real output schema is a superset of these columns


def test_python_api_on_a_users_dataset(ray_local, tmp_path, tiny_checkpoint):
    import ray.data

    from internvl_batch.api import Processor
    from internvl_batch.stages.output import OUTPUT_SCHEMA

    (tmp_path / "a.jpg").write_bytes(encode(make_photo(640, 480), "JPEG"))
    items = [
        {"id": "a", "image": str(tmp_path / "a.jpg"), "label": "cat", "score": 0.5},
        {"id": "gone", "image": str(tmp_path / "absent.jpg"), "label": "dog", "score": 0.1},
        {"id": None, "image": str(tmp_path / "a.jpg"), "label": "no id", "score": 0.2},
        {"id": "rel", "image": "a.jpg", "label": "relative", "score": 0.3},
    ]
    processor = Processor(
        {
            "model": {"path": str(tiny_checkpoint)},
            "generation": {"max_new_tokens": 3},
            "task": {"tasks": ["caption", "ocr"]},
            "resources": {"cpu_actors": 1, "gpu_replicas": 1},
            "fetch": {"local_roots": [str(tmp_path)]},  # the API's default is the working directory (and base_uri's)
        }
    )
    results = processor(ray.data.from_items(items))
    rows = results.take_all()
    assert len(rows) == 8 and set(results.schema().names) == set(OUTPUT_SCHEMA.names) | {"label", "score"}
    by = {(r["label"], r["task"]): r for r in rows}
    assert by[("cat", "caption")]["status"] == "ok" and by[("cat", "ocr")]["num_tiles"] == [13]
    assert by[("cat", "caption")]["score"] == 0.5 and by[("cat", "caption")]["id"] == "a"
    assert by[("dog", "caption")]["error"].startswith("fetch: FetchError:")
    assert by[("no id", "caption")]["status"] == "ok" and by[("no id", "caption")]["id"].startswith("row:")
    # Without base_uri a relative path is refused (with one, it is read from there: test_api_interop.py).
    assert "relative media path 'a.jpg'" in by[("relative", "ocr")]["error"]


def test_reading_ahead_is_bounded_in_blocks(ray_local, tmp_path, tiny_checkpoint):
    """Ray Data backpressures by bytes; the job adds a bound in blocks on the manifest read (read_ahead.py)."""
    from internvl_batch.manifest.scan import ScanTotals
    from internvl_batch.manifest.units import ManifestFile, ReadUnit
    from internvl_batch.pipeline.dataset import build_dataset
    from internvl_batch.pipeline.prepass import ScanResult
    from internvl_batch.pipeline.read_ahead import LIMIT_KEY, ReadAheadPolicy

    config = load_config(
        None,
        base={
            "input": {"manifests": "m.jsonl"},
            "output": {"path": str(tmp_path)},
            "model": {"path": str(tiny_checkpoint)},
            "resources": {"cpu_actors": [1, 3]},
        },
    )
    unit = ReadUnit(0, ManifestFile(str(tmp_path / "m.jsonl"), "jsonl", 10, "m.jsonl"), 0, 10)
    dataset = build_dataset(config, [unit], 10, ScanResult(ScanTotals(), [], {}, None), None, "tiny", 0, "run")
    assert ReadAheadPolicy in dataset.context.get_config("backpressure_policies.enabled")
    assert dataset.context.get_config(LIMIT_KEY) == 12
