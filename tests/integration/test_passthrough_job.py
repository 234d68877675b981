"""Pass-through columns through real runs on a real Ray cluster: user columns named like the pipeline's own
(`source`, `tasks`) come out as the user wrote them, a renamed `status` (img2dataset writes one) keeps its
values, and a resumed run whose values have another type keeps the output's schema, so that every reader
still merges the result files."""

import json

import datasets
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from internvl_batch.config_loader import load_config
from internvl_batch.job import run_job
from internvl_batch.results import read_results, result_files
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def write_manifest(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_user_columns_keep_their_names_values_and_types_across_runs(ray_local, tmp_path, tiny_checkpoint):
    (tmp_path / "p.jpg").write_bytes(encode(make_photo(320, 240, seed=1), "JPEG"))
    first = [
        {"id": "a", "image": "p.jpg", "source": "laion", "tasks": ["keep"], "status": "success", "width": 320},
        {"id": "b", "image": "p.jpg", "source": "coyo", "tasks": [], "status": "success", "width": 640},
    ]
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, first)
    base = {
        "input": {
            "manifests": str(manifest),
            "passthrough_columns": {
                "source": "source",
                "tasks": "tasks",
                "status": "download_status",
                "width": "width",
            },
        },
        "output": {"path": str(tmp_path / "out"), "max_error_fraction": 1.0},
        "model": {"path": str(tiny_checkpoint)},
        "generation": {"max_new_tokens": 2},
        "resources": {"cpu_actors": 1, "gpu_replicas": 1},
    }
    run_job(load_config(None, base=base))
    # A later run over a grown manifest: widths written as text now, one of them not a number at all.
    later = [
        {"id": "c", "image": "p.jpg", "source": "laion", "tasks": ["x"], "status": "success", "width": "1200"},
        {"id": "d", "image": "p.jpg", "source": "cc12m", "tasks": [], "status": "failed", "width": "1000px"},
    ]
    write_manifest(manifest, first + later)
    summary = run_job(load_config(None, base=base))
    assert summary["rows_processed"] == 2

    rows = {r["id"]: r for r in read_results(str(tmp_path / "out")).to_pylist()}
    assert [rows[k]["source"] for k in "abcd"] == ["laion", "coyo", "laion", "cc12m"]
    assert [rows[k]["tasks"] for k in "abcd"] == [["keep"], [], ["x"], []]
    assert [rows[k]["task"] for k in "abcd"] == ["caption"] * 4  # ours, beside theirs
    assert [rows[k]["download_status"] for k in "abcd"] == ["success", "success", "success", "failed"]
    assert [rows[k]["width"] for k in "abcd"] == [320, 640, 1200, None]
    assert [rows[k]["status"] for k in "abc"] == ["ok"] * 3
    assert rows["d"]["status"] == "error" and rows["d"]["error_stage"] == "manifest"
    assert "pass-through column `width` holds '1000px'" in rows["d"]["error"]

    files = result_files(str(tmp_path / "out"), load_config(None, base=base).storage)
    assert len(files) == 2
    # Every file has the first run's schema, so readers that merge files by schema read them all.
    assert pads.dataset(files, format="parquet").to_table().schema.field("width").type == pa.int64()
    assert pl.read_parquet(files)["width"].to_list().count(None) == 1
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))["train"]
    assert loaded.num_rows == 4 and loaded.features["width"].dtype == "int64"


def test_the_python_api_keeps_a_users_source_and_refuses_a_silent_status(ray_local, tmp_path, tiny_checkpoint):
    import ray

    from internvl_batch.api import Processor

    (tmp_path / "p.jpg").write_bytes(encode(make_photo(64, 48, seed=2), "JPEG"))
    items = [{"id": "a", "image": str(tmp_path / "p.jpg"), "source": "laion", "status": "success"}]
    processor = Processor(
        {"model": {"path": str(tiny_checkpoint)}, "generation": {"max_new_tokens": 2}}, base_uri=str(tmp_path)
    )
    with pytest.raises(ValueError, match=r"`status` is a column the output already has.*\{status: input_status\}"):
        processor(ray.data.from_items(items))
    rows = processor(ray.data.from_items(items), passthrough={"source": "source", "status": "download_status"})
    row = rows.take_all()[0]
    assert row["source"] == "laion" and row["download_status"] == "success" and row["status"] == "ok"
