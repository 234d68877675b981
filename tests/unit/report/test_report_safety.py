"""What the report does with outputs it cannot trust: result files it cannot read (invalid UTF-8, not Parquet),
local media outside its local roots, credentials in URIs and errors, markup in every text it shows. Real
result files (the write stage's own code), real images, the page parsed as HTML."""

import json
import os
from html.parser import HTMLParser

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.output_dir import data_path, new_run_id, summary_path, write_output_file
from internvl_batch.report import write_report
from internvl_batch.report.collect import collect
from internvl_batch.report.media import report_fetch_config
from internvl_batch.results import write_result_file
from tests.media import encode, make_photo
from tests.unit.report.test_report import result_rows, write_rows

OK = {"status": "ok", "num_tiles": [1], "num_input_tokens": 300, "num_output_tokens": 5, "finish_reason": "stop"}
NO_IMAGE = "data:image/"  # the page's thumbnails are data: URIs (its plots are inline SVG, without images)


def page_of(output: str, **kwargs) -> str:
    with open(write_report(output, **kwargs), encoding="utf-8") as f:
        return f.read()


def write_invalid_utf8(output: str, rows: list[dict], column: str) -> str:
    """A result file whose `column` (a string column) holds bytes that are not UTF-8 in its first row: written
    as binary, then viewed as string (Parquet writers and readers do not check it); returns its path."""
    run_id = new_run_id()
    table = result_rows(rows)
    table = table.set_column(table.schema.get_field_index("run_id"), "run_id", pa.array([run_id] * len(rows)))
    values = [b"caf\xe9 \xff\xfe"] + [(v or "").encode() for v in table.column(column).to_pylist()[1:]]
    invalid = pa.array(values, pa.binary()).view(pa.string())
    table = table.set_column(table.schema.get_field_index(column), column, invalid)
    return write_result_file(table, output, StorageConfig(), run_id)


@pytest.fixture
def out(tmp_path):
    (tmp_path / "out").mkdir()
    return str(tmp_path / "out")


@pytest.fixture
def photo(tmp_path):
    """A real PNG under tmp/media (the local root the tests allow)."""
    (tmp_path / "media").mkdir()
    path = tmp_path / "media" / "photo.png"
    path.write_bytes(encode(make_photo(160, 120), "PNG"))
    return str(path)


# 1. Result files the report cannot read --------------------------------------------------------------------


def test_a_result_file_with_invalid_utf8_is_skipped_and_named_and_the_rest_reported(out, photo, tmp_path):
    write_rows(
        out,
        [
            {**OK, "id": "good", "task": "caption", "media": [photo], "response": "A photo."},
            {"id": "lost", "task": "caption", "media": ["s3://b/lost.jpg"], "error": "fetch: FetchError: not found"},
        ],
    )
    failed = {"task": "caption", "media": ["x.jpg"], "error": "decode: ImageDecodeError: not an image"}
    bad = write_invalid_utf8(out, [{**failed, "id": "b1"}, {**failed, "id": "b2"}], "error")
    with pytest.raises(UnicodeDecodeError):  # what aborted the whole report before
        pq.read_table(bad).to_pylist()

    data = collect(out, StorageConfig())
    assert (data.files_total, data.rows, data.ok) == (2, 2, 1)
    assert [file for file, _ in data.skipped] == [bad]
    page = page_of(out, fetch=FetchConfig(local_roots=[os.path.dirname(photo)]))
    skipped = page[page.index("id='skipped'") : page.index("id='plots'")]
    assert (
        f"data-file='{bad}'" in skipped
        and "skipped: a string column holds invalid UTF-8 (column &#x27;error" in skipped
    )
    assert "2 of 2 read; 1 could not be read in full (see below)" in page
    gallery = page[page.index("id='gallery'") : page.index("id='failures'")]
    assert gallery.count("<figure class='row'") == 1 and "data:image/jpeg;base64," in gallery
    failures = page[page.index("id='failures'") :]
    assert "data-stage='fetch'" in failures and "data-stage='decode'" not in failures


def test_a_gallery_row_with_invalid_utf8_keeps_its_counts_and_is_named(out, photo):
    bad = write_invalid_utf8(out, [{**OK, "id": "odd", "task": "caption", "media": [photo]}], "response")
    write_rows(out, [{**OK, "id": "fine", "task": "caption", "media": [photo], "response": "Fine."}])
    data = collect(out, StorageConfig())
    assert (data.rows, data.ok) == (2, 2)  # the light columns are valid: the row is counted
    assert [row["id"] for row in data.gallery["caption"]] == ["fine"]
    assert data.skipped == [(bad, data.skipped[0][1])] and "1 gallery rows not shown" in data.skipped[0][1]
    assert "invalid UTF-8 (column 'response'" in data.skipped[0][1]


def test_a_result_file_that_is_not_parquet_is_skipped(out, photo):
    write_rows(out, [{**OK, "id": "fine", "task": "caption", "media": [photo], "response": "Fine."}])
    garbage = os.path.join(data_path(out), f"part-{new_run_id()}-{'0' * 12}.parquet")
    with open(garbage, "wb") as f:
        f.write(b"not parquet at all")
    data = collect(out, StorageConfig())
    assert (data.files_total, data.rows) == (2, 1)
    assert data.skipped[0][0] == garbage and data.skipped[0][1].startswith("skipped: ArrowInvalid: ")


# 2. Local media only under the report's local roots -----------------------------------------------------------


def test_report_fetch_config_chooses_the_local_roots(out, tmp_path, monkeypatch):
    assert report_fetch_config(out, StorageConfig()).local_roots == []  # no run recorded: no local media
    recorded = {"run_id": "r", "config": {"fetch": {"local_roots": ["/data/images", "relative/dir", 7]}}}
    write_output_file(summary_path(out), StorageConfig(), json.dumps(recorded))
    assert report_fetch_config(out, StorageConfig()).local_roots == ["/data/images"]  # absolute roots only
    given = FetchConfig(local_roots=["/mnt/job"], retries=0)
    assert report_fetch_config(out, StorageConfig(), given) is given  # the job's own, resolved roots
    monkeypatch.chdir(tmp_path)
    chosen = report_fetch_config(out, StorageConfig(), given, ["here", "/abs"])  # --local-root replaces them
    assert chosen.local_roots == [str(tmp_path / "here"), "/abs"] and chosen.retries == 0
    write_output_file(summary_path(out), StorageConfig(), "{not json")
    assert report_fetch_config(out, StorageConfig()).local_roots == []


def outside_roots_output(tmp_path, out) -> str:
    """A result row whose media is a real PNG in tmp/elsewhere, a directory the output's run never read."""
    (tmp_path / "elsewhere").mkdir()
    private = tmp_path / "elsewhere" / "private.png"
    private.write_bytes(encode(make_photo(200, 100, seed=3), "PNG"))
    write_rows(out, [{**OK, "id": "private", "task": "caption", "media": [str(private)], "response": "x"}])
    return str(tmp_path / "elsewhere")


def test_local_media_outside_the_given_roots_are_not_embedded(out, tmp_path):
    elsewhere = outside_roots_output(tmp_path, out)
    (tmp_path / "allowed").mkdir()
    os.symlink(os.path.join(elsewhere, "private.png"), tmp_path / "allowed" / "link.png")
    write_rows(out, [{**OK, "id": "link", "task": "caption", "media": [str(tmp_path / "allowed" / "link.png")]}])
    page = page_of(out, fetch=FetchConfig(local_roots=[str(tmp_path / "allowed")]))
    assert NO_IMAGE not in page  # neither the file nor the link to it that sits under the allowed root
    assert page.count("is outside the report&#x27;s local roots (" + str(tmp_path / "allowed") + ")") == 2
    assert "--local-root DIR" in page
    page = page_of(out, fetch=FetchConfig(local_roots=[elsewhere]))
    assert page.count("data:image/jpeg;base64,") == 2


def test_without_a_recorded_run_no_local_media_are_embedded_unless_allowed(out, tmp_path, capsys):
    from internvl_batch.cli import main

    elsewhere = outside_roots_output(tmp_path, out)
    page = page_of(out)
    assert NO_IMAGE not in page and "local roots (none: local reads are off)" in page
    assert (
        main(["report", out, "--out", str(tmp_path / "r.html"), "--local-root", "/nowhere", "--local-root", elsewhere])
        == 0
    )
    assert (tmp_path / "r.html").read_text(encoding="utf-8").count("data:image/jpeg;base64,") == 1


def test_the_roots_recorded_by_the_latest_run_apply_by_default(out, tmp_path):
    elsewhere = outside_roots_output(tmp_path, out)
    summary = {"run_id": "r", "status": "ok", "config": {"fetch": {"local_roots": [str(tmp_path / "other")]}}}
    write_output_file(summary_path(out), StorageConfig(), json.dumps(summary))
    assert NO_IMAGE not in page_of(out)
    summary["config"]["fetch"]["local_roots"].append(elsewhere)
    write_output_file(summary_path(out), StorageConfig(), json.dumps(summary))
    assert page_of(out).count("data:image/jpeg;base64,") == 1


# 3. Credentials ---------------------------------------------------------------------------------------------

PRESIGNED = (
    "https://127.0.0.1:9/bucket/cat.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLEKEY%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=deadbeef0123cafe"
)
USERINFO = "s3://AKIAEXAMPLEKEY:topsecretpassword@bucket/dog.jpg"


def test_credentials_in_media_and_errors_are_redacted_on_the_page(out):
    write_rows(
        out,
        [
            {**OK, "id": "signed", "task": "caption", "media": [PRESIGNED], "response": "x"},  # refused: loopback
            {"id": "lost", "task": "caption", "media": [PRESIGNED], "error": f"fetch: FetchError: {PRESIGNED}: 403"},
            {"id": "user", "task": "caption", "media": [USERINFO], "error": f"fetch: FetchError: {USERINFO}: denied"},
        ],
    )
    page = page_of(out, fetch=FetchConfig(retries=0))
    for secret in ("deadbeef0123cafe", "AKIAEXAMPLEKEY", "topsecretpassword"):
        assert secret not in page
    gallery = page[page.index("id='gallery'") : page.index("id='failures'")]
    assert "X-Amz-Signature=REDACTED" in gallery and "the media could not be read" in gallery  # meta, placeholder
    failures = page[page.index("id='failures'") :]
    assert failures.count("X-Amz-Signature=REDACTED") == 2  # media and error
    assert failures.count("s3://REDACTED@bucket/dog.jpg") == 2


# 4. Markup in every text the page shows ----------------------------------------------------------------------

LABEL = "' onmouseover='alert(1)' x='</text></svg><script>window.__xss=1</script><![CDATA[ ]]>&lt;<img onerror=x>"
QUESTION = '"><img src=x onerror=alert(1)>&lt;script&gt;'
ROW_ID = "'><svg onload=alert(1)></svg>&amp;"
TASK = "<b onmouseover=alert(1)>task</b>"
MEDIA = "'\"><img src=x onerror=alert(1)>&lt;i&gt;.jpg"
PARSE_ERROR = "]]></pre><script>alert(1)</script>&#x27;"
ERROR = "decode: ImageDecodeError: <iframe src=javascript:alert(1)></iframe>"


class Elements(HTMLParser):
    """Every element of a page: its tag, attributes and text (entities decoded, as a browser reads them)."""

    VOID = {"img", "meta", "br", "hr", "input", "link"}

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self.open: list[dict] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(element)
        if tag not in self.VOID:
            self.open.append(element)

    def handle_startendtag(self, tag, attrs):
        self.elements.append({"tag": tag, "attrs": dict(attrs), "text": ""})

    def handle_endtag(self, tag):
        for k in range(len(self.open) - 1, -1, -1):
            if self.open[k]["tag"] == tag:
                del self.open[k:]
                return

    def handle_data(self, data):
        for element in self.open:
            element["text"] += data

    def find(self, tag: str, **attrs) -> list[dict]:
        return [
            e
            for e in self.elements
            if e["tag"] == tag and all(e["attrs"].get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def test_markup_in_labels_questions_ids_media_and_parse_errors_stays_text(out, photo):
    write_rows(
        out,
        [
            {
                **OK,
                "id": ROW_ID,
                "task": TASK,
                "media": [photo],
                "question": QUESTION,
                "response": "<ref>x</ref><box>[[0, 0, 500, 500]]</box>",
                "parse_error": PARSE_ERROR,
                "media_sizes": [{"width": 160, "height": 120}],
                "boxes": [{"label": LABEL, "x1": 10.0, "y1": 20.0, "x2": 80.0, "y2": 60.0}],
            },
            {**OK, "id": "media", "task": "caption", "media": [MEDIA], "response": "x"},
            {"id": "failed", "task": "caption", "media": [MEDIA], "error": ERROR},
        ],
    )
    page = page_of(out, fetch=FetchConfig(local_roots=[os.path.dirname(photo)]))
    elements = Elements(page)
    tags = {e["tag"] for e in elements.elements}
    assert not tags & {"script", "iframe", "object", "embed", "foreignobject", "image", "a"}, tags
    assert not [(e["tag"], a) for e in elements.elements for a in e["attrs"] if a.startswith("on")]
    images = elements.find("img")
    assert len(images) == 1 and images[0]["attrs"]["src"].startswith("data:image/jpeg;base64,")
    assert {a for e in images for a in e["attrs"]} <= {"src", "width", "height", "alt", "title"}
    assert [e["tag"] for e in elements.elements].count("svg") == 1 + 4  # the boxes' and the 4 plots'
    # Each text reads back exactly as given: escaped once, never twice.
    (figure,) = elements.find("figure", data_id=ROW_ID)
    assert figure["attrs"]["data-task"] == TASK
    (rect,) = elements.find("rect", data_label=LABEL)
    (label,) = [e for e in elements.find("text") if e["attrs"].get("fill") == "#e3342f"]
    assert label["text"] == LABEL and f"boxes: {LABEL} [10, 20, 80, 60]" in figure["text"]
    assert f"Q: {QUESTION}" in figure["text"] and f"parse_error: {PARSE_ERROR}" in figure["text"]
    assert f"{TASK} (1 of 1 ok rows)" in [e["text"] for e in elements.find("h3")]
    (media_figure,) = elements.find("figure", data_id="media")
    assert f"media · {MEDIA}" in media_figure["text"] and "not shown: " + MEDIA in media_figure["text"]
    cells = [e["text"] for e in elements.find("td")]
    assert ["failed", MEDIA, ERROR] == cells[cells.index("failed") : cells.index("failed") + 3]
