"""Exports of a real output into the tools they are for: the demo's output (plus the rows a real model adds:
several boxes, a failed PDF page, hostile text) into a real Label Studio and pycocotools, and as OCR text.
(The export as Ray tasks: test_export_on_ray.py, with the modules that share a Ray cluster.)"""

import json
import shutil

import pytest

from internvl_batch.cli import main
from internvl_batch.results import read_results
from tests.integration.label_studio import label_studio_server
from tests.unit.report.test_report import HOSTILE, write_rows

pytestmark = pytest.mark.integration


def add_model_rows(out: str) -> dict:
    """A later run's rows of the demo's ids, as a real model writes them: the logo grounded with three boxes
    (one labelled with hostile text), the scanned report's second page failed, a hostile caption."""
    rows = {(r["id"], r["task"]): r for r in read_results(out).to_pylist()}
    logo = rows[("logo", "ground")]
    width, height = logo["media_sizes"][0]["width"], logo["media_sizes"][0]["height"]
    boxes = [
        {"label": "the red circle", "x1": 0.1 * width, "y1": 0.2 * height, "x2": 0.5 * width, "y2": 0.6 * height},
        {"label": "the red circle", "x1": 0.55 * width, "y1": 0.0, "x2": float(width), "y2": 0.333 * height},
        {"label": HOSTILE, "x1": 1.5, "y1": 2.25, "x2": 3.0, "y2": 4.0},
    ]
    ok = {"status": "ok", "num_tiles": [7], "num_input_tokens": 900, "num_output_tokens": 30, "finish_reason": "stop"}
    page = rows[("scanned-report#p2", "ocr")]
    write_rows(
        out,
        [
            {**logo, **ok, "response": "<ref>the red circle</ref><box>[[100, 200, 500, 600]]</box>", "boxes": boxes},
            {**page, "status": "error", "response": None, "error": "decode: DocumentError: page 2: " + HOSTILE},
            {**rows[("mountains", "caption")], "response": HOSTILE},
        ],
    )
    return {"logo": (width, height, boxes)}


@pytest.mark.slow
def test_the_demo_output_in_label_studio_pycocotools_and_as_documents(demo, tmp_path, capsys):
    from pycocotools.coco import COCO

    proc, demo_dir = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = str(tmp_path / "out")
    shutil.copytree(demo_dir / "demo", out)
    width, height, boxes = add_model_rows(out)["logo"]
    samples = str(read_results(out).to_pylist()[0]["media"][0]).rsplit("/", 1)[0] + "/"

    tasks_file, config_file = tmp_path / "tasks.json", tmp_path / "config.xml"
    args = ["--url-prefix", "/data/local-files/?d=", "--strip-prefix", samples, "--label-config", str(config_file)]
    assert main(["export", out, "--format", "label-studio", "--out", str(tasks_file), *args]) == 0
    assert "5 tasks, 3 boxes in 1 file" in capsys.readouterr().out  # mountains, panorama, phone-photo, document, logo
    tasks = json.loads(tasks_file.read_text("utf-8"))
    with label_studio_server(tmp_path) as studio:
        project = studio.call(
            "POST", "/api/projects", {"title": "demo export", "label_config": config_file.read_text()}
        )
        imported = studio.call("POST", f"/api/projects/{project['id']}/import?return_task_ids=true", tasks)
        assert imported["task_count"] == len(tasks) and imported["prediction_count"] == len(tasks)
        back = {}
        for task_id in imported["task_ids"]:
            task = studio.call("GET", f"/api/tasks/{task_id}")
            (prediction,) = studio.call("GET", f"/api/predictions?task={task_id}")
            back[task["data"]["id"]] = (task["data"], prediction)
    assert sorted(back) == sorted(t["data"]["id"] for t in tasks)
    data, prediction = back["logo"]
    assert data["image"] == "/data/local-files/?d=logo_rgba.png"
    assert prediction["model_version"].startswith("tiny ground:")  # the model, the ground fingerprint
    rects = [r for r in prediction["result"] if r["type"] == "rectanglelabels"]
    assert len(rects) == 3
    for rect, box in zip(rects, boxes):
        v = rect["value"]
        got = [v["x"] * width / 100, v["y"] * height / 100, v["width"] * width / 100, v["height"] * height / 100]
        want = [box["x1"], box["y1"], box["x2"] - box["x1"], box["y2"] - box["y1"]]
        assert got == pytest.approx(want, abs=1e-6) and v["rectanglelabels"] == [box["label"]]
    assert back["mountains"][1]["result"][0]["value"]["text"] == [HOSTILE]

    assert main(["export", out, "--format", "coco", "--out", str(tmp_path / "coco.json")]) == 0
    coco = COCO(str(tmp_path / "coco.json"))
    (logo,) = [i for i in coco.dataset["images"] if i["internvl_id"] == "logo"]
    bboxes = sorted(a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[logo["id"]])))
    want = sorted([b["x1"], b["y1"], b["x2"] - b["x1"], b["y2"] - b["y1"]] for b in boxes)
    assert [pytest.approx(b, abs=1e-6) for b in want] == bboxes and (logo["width"], logo["height"]) == (width, height)

    capsys.readouterr()
    assert main(["export", out, "--format", "text", "--out", str(tmp_path / "text")]) == 0
    assert "2 documents, 1 failed pages marked" in capsys.readouterr().out  # the report (2 pages) and document.png
    report = (tmp_path / "text" / "scanned-report.txt").read_text("utf-8").split("\f")
    assert len(report) == 2 and report[1] == f"[page 2 failed: decode: DocumentError: page 2: {HOSTILE}]"
