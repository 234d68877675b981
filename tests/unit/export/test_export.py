"""`internvl-batch export`: Label Studio tasks, COCO files and OCR documents from an output's current rows, read
back by the tools they are for (pycocotools here; a real Label Studio in tests/integration/test_cli_run.py)."""

import json
import os
import xml.etree.ElementTree as ET

import pyarrow.parquet as pq
import pytest

from internvl_batch.cli import main
from internvl_batch.errors import ConfigError
from internvl_batch.export import rows as export_rows
from internvl_batch.export.options import ExportOptions
from internvl_batch.export.writers import document_file_name
from internvl_batch.pipeline.export import export_output
from internvl_batch.results import read_results
from tests.unit.export.rows import BOXES, HOSTILE, HOSTILE_ID, HOSTILE_LABEL, write_output

W, H = 640, 480


@pytest.fixture
def output(tmp_path):
    out = str(tmp_path / "out")
    write_output(out)
    return out


def export(output, fmt, out, **options):
    return export_output(output, ExportOptions(format=fmt, out=str(out), **options), engine="local")


def test_label_studio_tasks_hold_the_current_answers_as_predictions(output, tmp_path):
    summary = export(output, "label-studio", tmp_path / "tasks.json", label_config=str(tmp_path / "config.xml"))
    tasks = {t["data"]["id"]: t for t in json.loads((tmp_path / "tasks.json").read_text("utf-8"))}
    # One task per image: the PDF pages, the video, the two-image row and the error row are left out, counted.
    assert sorted(tasks) == sorted(["boxed", HOSTILE_ID, "scan", "gone"])
    assert summary["items"] == 4 and summary["boxes"] == 3 and summary["files"] == 1
    assert (summary["error_rows"], summary["skipped_not_image"]) == (2, 5)  # a failed page is an error row
    boxed = tasks["boxed"]
    assert boxed["data"]["image"] == "s3://bucket/photos/a.jpg"  # kept for Label Studio's cloud storage
    (prediction,) = boxed["predictions"]
    assert prediction["model_version"] == f"tiny caption:{'c' * 12} ground:{'f' * 12}"
    texts = [r for r in prediction["result"] if r["type"] == "textarea"]
    assert texts == [
        {
            "from_name": "caption",
            "to_name": "image",
            "type": "textarea",
            "value": {"text": ["A red circle on white."]},
            "id": "r0",
        }
    ]  # the second run's caption, not the first's
    rects = [r for r in prediction["result"] if r["type"] == "rectanglelabels"]
    assert len(rects) == 3 and len({r["id"] for r in prediction["result"]}) == 4
    for rect, box in zip(rects, BOXES):
        assert (rect["original_width"], rect["original_height"], rect["image_rotation"]) == (W, H, 0)
        v = rect["value"]
        assert v["rectanglelabels"] == [box["label"]] and v["rotation"] == 0
        back = [v["x"] * W / 100, v["y"] * H / 100, (v["x"] + v["width"]) * W / 100, (v["y"] + v["height"]) * H / 100]
        assert back == pytest.approx([box["x1"], box["y1"], box["x2"], box["y2"]], abs=1e-9)
    # Hostile text is JSON-encoded: it comes back as it was.
    assert tasks[HOSTILE_ID]["predictions"][0]["result"][0]["value"]["text"] == [HOSTILE]
    # Local media without --url-prefix stay paths (counted); the config names every label and text task.
    assert tasks[HOSTILE_ID]["data"]["image"] == "/srv/media/odd name#1.png" and summary["local_media_unmapped"] == 1
    view = ET.parse(tmp_path / "config.xml").getroot()
    assert [e.get("value") for e in view.iter("Label")] == sorted(["the red circle", HOSTILE_LABEL])
    assert sorted(e.get("name") for e in view.iter("TextArea")) == ["caption", "ocr"]
    assert view.find("Image").get("value") == "$image"


def test_label_studio_local_media_as_urls(output, tmp_path):
    export(output, "label-studio", tmp_path / "t.json", url_prefix="/data/local-files/?d=", strip_prefix="/srv/")
    tasks = {t["data"]["id"]: t for t in json.loads((tmp_path / "t.json").read_text("utf-8"))}
    assert tasks[HOSTILE_ID]["data"]["image"] == "/data/local-files/?d=media/odd%20name%231.png"


def test_coco_round_trips_through_pycocotools(output, tmp_path):
    from pycocotools.coco import COCO

    summary = export(output, "coco", tmp_path / "coco.json")
    coco = COCO(str(tmp_path / "coco.json"))
    by_id = {img["internvl_id"]: img for img in coco.dataset["images"]}
    assert sorted(by_id) == sorted(["boxed", HOSTILE_ID, "scan", "gone"]) and summary["items"] == 4
    boxed = by_id["boxed"]
    assert (boxed["file_name"], boxed["width"], boxed["height"]) == ("s3://bucket/photos/a.jpg", W, H)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[boxed["id"]]))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert sorted(names.values()) == sorted(["the red circle", HOSTILE_LABEL])
    got = sorted((names[a["category_id"]], *a["bbox"]) for a in anns)
    want = sorted((b["label"], b["x1"], b["y1"], b["x2"] - b["x1"], b["y2"] - b["y1"]) for b in BOXES)
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1:] for g in got] == [pytest.approx(w[1:], abs=1e-9) for w in want]
    assert all(a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3]) and a["iscrowd"] == 0 for a in anns)
    captions = COCO(str(tmp_path / "coco.captions.json"))
    caption = {captions.imgs[a["image_id"]]["internvl_id"]: a["caption"] for a in captions.dataset["annotations"]}
    assert caption == {"boxed": "A red circle on white.", HOSTILE_ID: HOSTILE, "gone": "deleted since"}
    assert summary["skipped_text_rows"] == 1  # the OCR row is no COCO annotation


def test_documents_pages_in_order_failed_and_missing_pages_marked(output, tmp_path):
    summary = export(output, "documents", tmp_path / "docs.jsonl")
    docs = {d["id"]: d for d in map(json.loads, (tmp_path / "docs.jsonl").read_text("utf-8").splitlines())}
    assert sorted(docs) == ["report", "scan", "short"] and summary["items"] == 3
    report = docs["report"]
    error = "decode: DocumentError: page 2 could not be rendered"
    assert report["text"] == f"page one\f[page 2 failed: {error}]\fpage three"
    assert (report["num_pages"], report["pages_ok"], report["pages_failed"]) == (3, 2, 1)
    assert docs["short"]["text"] == "only page\f[page 2 missing]" and docs["short"]["pages_failed"] == 1
    assert docs["scan"] == {
        "id": "scan",
        "task": "ocr",
        "text": "INVOICE 42\nTotal: 3 EUR",
        "num_pages": 1,
        "pages_ok": 1,
        "pages_failed": 0,
    }
    assert summary["pages_failed"] == 2
    # The same table from read_results (every task: captions of one image are one-page documents too).
    table = read_results(output, documents=True)
    ocr = [r for r in table.to_pylist() if r["task"] == "ocr"]
    assert ocr == sorted(docs.values(), key=lambda d: d["id"])
    # Parquet, another separator.
    export(output, "documents", tmp_path / "docs.parquet", page_separator="\n---\n")
    assert pq.read_table(tmp_path / "docs.parquet").to_pylist()[0]["text"].count("\n---\n") == 2


def test_text_files_one_per_document_never_outside_the_folder(output, tmp_path):
    export(output, "text", tmp_path / "text", task=None)
    files = sorted(
        os.path.relpath(os.path.join(d, f), tmp_path / "text") for d, _, fs in os.walk(tmp_path / "text") for f in fs
    )
    assert files == sorted(
        [
            "report.ocr.txt",
            "scan.ocr.txt",
            "short.ocr.txt",
            "boxed.caption.txt",
            "boxed.ground.txt",
            "gone.caption.txt",
            document_file_name(HOSTILE_ID, "caption"),
        ]
    )
    assert (tmp_path / "text" / "report.ocr.txt").read_text("utf-8").startswith("page one\f[page 2 failed")
    assert document_file_name(HOSTILE_ID) == "%2E%2E/%2E%2E/etc/%22x%22%3Cy%3E/%26%0A.txt"
    for name in ("..", ".", "", "a" * 400, "x/../../y"):
        path = os.path.normpath(os.path.join("/base", document_file_name(name)))
        assert path.startswith("/base/") and len(os.path.basename(path).encode()) < 255
    assert len({document_file_name(n) for n in ("a/b", "a%2Fb", "a_b", "a/b ", "A/b")}) == 5


def test_shards_overwrite_and_partitions_spilled(output, tmp_path, monkeypatch):
    whole = export(output, "label-studio", tmp_path / "one.json")
    assert export(output, "label-studio", tmp_path / "four.json", max_items_per_file=4)["files"] == 1  # fits: one
    assert (tmp_path / "four.json").exists() and not list(tmp_path.glob("four-*"))
    summary = export(output, "label-studio", tmp_path / "t.json", max_items_per_file=3)
    assert summary["files"] == 2 and not (tmp_path / "t.json").exists()
    shards = [json.loads((tmp_path / f"t-{k:05d}.json").read_text("utf-8")) for k in range(2)]
    assert [len(s) for s in shards] == [3, 1]
    with pytest.raises(ConfigError, match="exists"):
        export(output, "label-studio", tmp_path / "t.json")
    export(output, "label-studio", tmp_path / "t.json", overwrite=True)  # the shards go, one file stays
    assert sorted(os.listdir(tmp_path)) == ["four.json", "one.json", "out", "t.json"]
    # Many partitions (spilled to temporary files), items made a group at a time: the same tasks.
    monkeypatch.setattr(export_rows, "PARTITION_BYTES", 1)
    monkeypatch.setattr(export_rows, "SLICE_ROWS", 1)
    spilled = export(output, "label-studio", tmp_path / "p.json")
    key = lambda t: t["data"]["id"]  # noqa: E731
    one = sorted(json.loads((tmp_path / "one.json").read_text("utf-8")), key=key)
    assert sorted(json.loads((tmp_path / "p.json").read_text("utf-8")), key=key) == one
    assert {k: v for k, v in spilled.items() if k != "out" and k != "first_files"} == {
        k: v for k, v in whole.items() if k != "out" and k != "first_files"
    }


def test_slices_never_cut_a_group(output, monkeypatch):
    from internvl_batch.config import StorageConfig
    from internvl_batch.export.rows import group_slices, partition_rows, plan_chunks, split_chunk

    chunks, partitions, _ = plan_chunks(output, StorageConfig())
    assert partitions == 1 and len(chunks) == 1
    table = partition_rows(split_chunk(output, StorageConfig(), *chunks[0], 1))
    slices = list(group_slices(table, rows=2))
    groups = [set(s.column("_group").to_pylist()) for s in slices]
    assert sum(s.num_rows for s in slices) == table.num_rows and len(slices) > 3
    assert all(not (a & b) for k, a in enumerate(groups) for b in groups[k + 1 :])  # a group in one slice
    assert table.column("_group").to_pylist().count("report") == 3  # a document's pages, one group


def test_orphans_left_out_when_asked(output, tmp_path):
    import internvl_batch

    internvl_batch.export_output(output, "coco", tmp_path / "c.json", engine="local", drop_orphans=True)
    ids = {i["internvl_id"] for i in json.loads((tmp_path / "c.json").read_text("utf-8"))["images"]}
    assert "gone" not in ids and "boxed" in ids


def test_the_command_line(output, tmp_path, capsys):
    assert main(["export", output, "--format", "documents", "--out", str(tmp_path / "d.jsonl")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"exported {output} as documents to {tmp_path / 'd.jsonl'}: 3 documents, 2 failed pages")
    assert line.endswith("in 1 file; left out: 0 error rows")
    assert main(["export", output, "--format", "documents", "--out", str(tmp_path / "d.txt")]) == 2
    assert "writes .jsonl or .parquet" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "none"), "--format", "coco", "--out", str(tmp_path / "c.json")]) == 2
    assert main(["export", output, "--format", "coco", "--out", f"{output}/data/c.json"]) == 2
    assert "inside the job's output" in capsys.readouterr().err


def test_the_command_lines_formats_are_the_registrys():
    from internvl_batch import cli_export
    from internvl_batch.export.formats import FORMATS

    assert cli_export.FORMATS == tuple(FORMATS)


def test_a_document_that_shrank_keeps_its_latest_page_count():
    """A PDF read again with fewer pages: its old page 3 is still a current row (another key), but the latest
    page count (of its page 1) says where the document ends."""
    import pyarrow as pa

    from internvl_batch.documents import group_documents

    rows = [
        {"id": f"d#p{n}", "task": "ocr", "status": "ok", "response": f"p{n}", "page": n, "num_pages": total}
        for n, total in ((1, 2), (2, 2), (3, 3))
    ] + [{"id": "n#p2", "task": "ocr", "status": "ok", "response": "x", "page": 2, "num_pages": None}]
    documents, counts = group_documents(pa.Table.from_pylist(rows))
    assert documents.to_pylist() == [
        {"id": "d", "task": "ocr", "text": "p1\fp2", "num_pages": 2, "pages_ok": 2, "pages_failed": 0},
        {"id": "n", "task": "ocr", "text": "[page 1 missing]\fx", "num_pages": 2, "pages_ok": 1, "pages_failed": 1},
    ]
