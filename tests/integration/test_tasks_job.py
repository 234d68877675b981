"""Several tasks over the same media in one job, end to end: each image fetched once (requests counted at the
S3 endpoint), one output row per (id, task), typed grounding and JSON columns in Parquet, resume by pair."""

import io
import json

import pyarrow.parquet as pq
import pytest

from internvl_batch.config import StorageConfig
from internvl_batch.config_loader import load_config
from internvl_batch.job import run_job
from internvl_batch.results import read_results
from tests.integration.fault_proxy import FaultProxy
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMA = {
    "type": "object",
    "properties": {
        "species": {"type": "string"},
        "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["species", "count"],
}


def test_multi_task_job_fetches_each_image_once(ray_local, s3, bucket, s3_endpoint, tiny_checkpoint):
    images = {"a.jpg": (640, 480), "b.png": (500, 900), "c.jpg": (448, 448)}
    for name, size in images.items():
        with s3.open(f"{bucket}/img/{name}", "wb") as f:
            f.write(encode(make_photo(*size), "JPEG" if name.endswith("jpg") else "PNG"))
    rows = [{"id": n.split(".")[0], "image": f"img/{n}", "expression": "the gradient", "kind": "photo"} for n in images]
    with s3.open(f"{bucket}/m.jsonl", "wb") as f:
        f.write("\n".join(json.dumps(r) for r in rows).encode())
    tasks = ["caption", "ocr", "ground", "json", "custom"]
    with FaultProxy(s3_endpoint) as proxy:
        storage = {"endpoint_url": proxy.url}
        base = {
            "input": {"manifests": f"s3://{bucket}/m.jsonl"},
            "output": {"path": f"s3://{bucket}/out", "max_error_fraction": 1.0},
            "model": {"path": str(tiny_checkpoint)},
            "generation": {"max_new_tokens": 4},
            "task": {"tasks": tasks, "template": "What {kind} is this?", "json_schema": SCHEMA},
            "storage": storage,
            "resources": {"cpu_actors": 1, "gpu_replicas": 1},
        }
        summary = run_job(load_config(None, base=base))
        gets = {
            name: sum(n for (m, p), n in proxy.hits.items() if m == "GET" and p.endswith(f"/img/{name}"))
            for name in images
        }
        again = run_job(load_config(None, base=base))
    assert gets == {name: 1 for name in images}  # five tasks, one download per image
    assert summary["results_expected"] == 15 and summary["rows_processed"] == 15
    assert (again["rows_processed"], again["rows_already_done"]) == (0, 15)  # resume works per (id, task)

    current = read_results(f"s3://{bucket}/out", StorageConfig(endpoint_url=s3_endpoint))
    pairs = sorted(zip(current.column("id").to_pylist(), current.column("task").to_pylist()))
    assert pairs == sorted((r["id"], t) for r in rows for t in tasks)
    by_key = {(r["id"], r["task"]): r for r in current.to_pylist()}
    assert all(r["status"] == "ok" and r["response"] is not None for r in by_key.values())
    assert by_key[("a", "custom")]["question"] == "What photo is this?"
    assert by_key[("b", "ground")]["media_sizes"] == [{"width": 500, "height": 900}]
    assert by_key[("b", "ground")]["parse_error"].startswith("ground: ")  # random weights write no boxes
    assert by_key[("a", "json")]["parsed"] is None and by_key[("a", "json")]["parse_error"].startswith("json: ")

    file = next(f for f in s3.find(f"{bucket}/out") if f.endswith(".parquet"))
    with s3.open(file, "rb") as f:
        schema = pq.read_schema(io.BytesIO(f.read()))
    assert (
        str(schema.field("boxes").type)
        == "list<element: struct<label: string, x1: double, y1: double, x2: double, y2: double>>"
    )
    assert str(schema.field("parsed").type) == "struct<species: string, count: int64, tags: list<element: string>>"


def test_documents_have_a_row_per_page_and_resume_by_document(ray_local, tmp_path, tiny_checkpoint):
    """Pages land in different result files; a page lost from the output makes the next run redo its whole
    document (and only it); the run after that has nothing to do."""
    from tests.media import encode_pdf, scanned_page

    square = (448, 448)  # a square page: 5 tiles, quick on the tiny model
    (tmp_path / "scan.pdf").write_bytes(encode_pdf([scanned_page(n, square) for n in (1, 2, 3)]))
    (tmp_path / "photo.jpg").write_bytes(encode(make_photo(64, 64), "JPEG"))
    rows = [{"id": "scan", "document": "scan.pdf"}, {"id": "photo", "image": "photo.jpg"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    config = load_config(
        None,
        base={
            "input": {"manifests": str(tmp_path / "m.jsonl")},
            "output": {"path": str(out), "rows_per_file": 1},
            "model": {"path": str(tiny_checkpoint)},
            "generation": {"max_new_tokens": 2},
            "task": {"name": "ocr"},
            "resources": {"cpu_actors": 1, "gpu_replicas": 1, "gpu_batch_size": 1},
        },
    )
    first = run_job(config)
    assert (first["results_written"], first["rows_processed"], first["one_row_per_input"]) == (2, 4, True)
    current = {r["id"]: r for r in read_results(str(out)).to_pylist()}
    assert sorted(current) == ["photo", "scan#p1", "scan#p2", "scan#p3"]
    assert [(current[f"scan#p{n}"]["page"], current[f"scan#p{n}"]["num_pages"]) for n in (1, 2, 3)] == [
        (1, 3),
        (2, 3),
        (3, 3),
    ]

    for file in out.rglob("part-*.parquet"):  # lose page 2's result file
        if pq.read_table(file, columns=["id"]).column("id").to_pylist() == ["scan#p2"]:
            file.unlink()
    second = run_job(config)
    assert (second["rows_already_done"], second["results_written"], second["rows_processed"]) == (1, 1, 3)
    assert second["one_row_per_input"]
    current = {r["id"]: r for r in read_results(str(out)).to_pylist()}
    assert sorted(current) == ["photo", "scan#p1", "scan#p2", "scan#p3"]
    assert {current[f"scan#p{n}"]["run_id"] for n in (1, 2, 3)} == {second["run_id"]}

    third = run_job(config)
    assert (third["rows_already_done"], third["rows_processed"]) == (2, 0)
