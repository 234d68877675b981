"""An output as a job writes it, with what a real model adds (several boxes, failed pages, hostile text), for
the export tests: result files written by the write stage's own code (`tests.unit.report.test_report`)."""

import pyarrow as pa

from internvl_batch.config import StorageConfig
from internvl_batch.keys import key_hashes
from internvl_batch.orphans import write_orphan_keys
from internvl_batch.output_dir import new_run_id
from tests.unit.report.test_report import HOSTILE, write_rows

HOSTILE_ID = '../../etc/"x"<y>/&\n'
HOSTILE_LABEL = 'a "b" <c/> & \u00e9\u6f22'
OK = {"status": "ok", "num_tiles": [7], "num_input_tokens": 1800, "num_output_tokens": 9, "finish_reason": "stop"}
SIZE = [{"width": 640, "height": 480}]
BOXES = [
    {"label": "the red circle", "x1": 64.0, "y1": 48.0, "x2": 320.0, "y2": 240.0},
    {"label": "the red circle", "x1": 320.5, "y1": 0.0, "x2": 640.0, "y2": 479.25},
    {"label": HOSTILE_LABEL, "x1": 1.0, "y1": 2.0, "x2": 3.0, "y2": 4.0},
]


def image(id_, task, response, media="s3://bucket/photos/a.jpg", **extra):
    return {**OK, "id": id_, "task": task, "media": [media], "media_sizes": SIZE, "response": response, **extra}


def page(doc, number, total, response=None, error=None):
    row = {"id": f"{doc}#p{number}", "task": "ocr", "media": [f"/data/{doc}.pdf"], "page": number}
    row.update(num_pages=total, media_sizes=[{"width": 595, "height": 842}])
    if error:
        return {**row, "status": "error", "error": error}
    return {**OK, **row, "response": response}


def write_output(out: str) -> dict:
    """Two runs: the second redoes some keys (its rows are current) and adds others; returns the run ids."""
    first, second = new_run_id(), new_run_id()
    write_rows(
        out,
        [
            image("boxed", "caption", "an old caption"),  # superseded by the second run
            image("boxed", "ground", "<ref>the red circle</ref>", boxes=BOXES, config_fingerprint="f" * 64),
            page("report", 1, 3, "page one"),
            page("report", 2, 3, error="decode: DocumentError: page 2 could not be rendered"),
            page("report", 3, 3, "page three"),
            image("gone", "caption", "deleted since"),
        ],
        first,
    )
    write_rows(
        out,
        [
            image("boxed", "caption", "A red circle on white.", config_fingerprint="c" * 64),
            image(HOSTILE_ID, "caption", HOSTILE, media="/srv/media/odd name#1.png"),
            image("scan", "ocr", "INVOICE 42\nTotal: 3 EUR"),
            {"id": "broken", "task": "caption", "media": ["s3://bucket/b.jpg"], "error": "fetch: FetchError: gone"},
            {**image("clip", "caption", "a video"), "num_frames": 8, "media": ["s3://bucket/c.mp4"]},
            {**image("pair", "caption", "two photos"), "media": ["s3://bucket/1.jpg", "s3://bucket/2.jpg"]},
            page("short", 1, 2, "only page"),  # its page 2 was never written
        ],
        second,
    )
    write_orphan_keys(out, StorageConfig(), key_hashes(["gone"], ["caption"]), second)
    return {"first": first, "second": second}


def table_of(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)
