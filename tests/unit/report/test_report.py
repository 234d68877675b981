"""The HTML report (`internvl_batch/report/`) from result files written by the write stage's own code: what it
shows, its escaping, placeholders for media gone since, and its bounded reading. The page as a browser shows
it is checked in `tests/integration/test_cli_run.py` (headless Chromium)."""

import re

import pyarrow as pa
import pytest

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.output_dir import new_run_id
from internvl_batch.report import write_report
from internvl_batch.report.collect import collect
from internvl_batch.results import write_result_file
from internvl_batch.stages.output import OUTPUT_SCHEMA, to_output_table
from tests.media import encode, encode_video, make_photo

HOSTILE = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>'
BOX_TYPE = OUTPUT_SCHEMA.field("boxes").type


def result_rows(rows: list[dict]) -> pa.Table:
    """Output rows as the model stage makes them (`to_output_table`), from a few given columns."""
    columns = {name: [row.get(name) for row in rows] for name in {k for row in rows for k in row}}
    types = {name: OUTPUT_SCHEMA.field(name).type for name in columns if name in OUTPUT_SCHEMA.names}
    table = pa.table({name: pa.array(values, types.get(name)) for name, values in columns.items()})
    return to_output_table(table, "tiny", [], None)


def write_rows(output: str, rows: list[dict], run_id: str | None = None) -> None:
    run_id = run_id or new_run_id()
    table = result_rows(rows)
    table = table.set_column(table.schema.get_field_index("run_id"), "run_id", pa.array([run_id] * len(rows)))
    write_result_file(table, output, StorageConfig(), run_id)


@pytest.fixture
def output(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "photo.jpg").write_bytes(encode(make_photo(800, 600), "JPEG"))
    (media / "gone.jpg").write_bytes(encode(make_photo(64, 64), "JPEG"))
    (media / "clip.mp4").write_bytes(encode_video(48, 24.0))
    (tmp_path / "out").mkdir()
    out = str(tmp_path / "out")
    ok = {"status": "ok", "num_tiles": [7], "num_input_tokens": 1800, "num_output_tokens": 9, "finish_reason": "stop"}
    write_rows(
        out,
        [
            {**ok, "id": "cap", "task": "caption", "media": [str(media / "photo.jpg")], "response": "A photo."},
            {**ok, "id": "evil", "task": "caption", "media": [str(media / "photo.jpg")], "response": HOSTILE},
            {**ok, "id": "gone", "task": "caption", "media": [str(media / "gone.jpg")], "response": "x"},
            {
                **ok,
                "id": "boxed",
                "task": "ground",
                "media": [str(media / "photo.jpg")],
                "response": "<ref>dog</ref><box>[[100, 100, 500, 500]]</box>",
                "media_sizes": [{"width": 800, "height": 600}],
                "boxes": [{"label": "dog", "x1": 80.0, "y1": 60.0, "x2": 400.0, "y2": 300.0}],
                "finish_reason": "length",
            },
            {
                **ok,
                "id": "clip",
                "task": "vqa",
                "media": [str(media / "clip.mp4")],
                "response": "Frames.",
                "frame_indices": [0, 20, 40],
                "frame_timestamps": [0.0, 0.83, 1.67],
            },
            {
                "id": "lost",
                "task": "caption",
                "media": ["s3://b/lost.jpg"],
                "error": "fetch: FetchError: s3://b/lost.jpg: not found",
            },
            {"id": "bad", "task": "caption", "media": ["x.jpg"], "error": "decode: ImageDecodeError: not an image"},
            {"id": "bad2", "task": "caption", "media": ["y.jpg"], "error": "decode: ImageDecodeError: " + HOSTILE},
        ],
    )
    (media / "gone.jpg").unlink()  # a file deleted after the run
    return out


def test_the_report_shows_rows_failures_and_plots_and_escapes_text(output, tmp_path):
    where = write_report(output, out=str(tmp_path / "r.html"), fetch=FetchConfig(local_roots=[str(tmp_path / "media")]))
    page = open(where, encoding="utf-8").read()
    assert "<script" not in page and "onerror=" not in page.replace("onerror=&quot;", "")  # no live markup
    assert page.count(re.escape("&lt;script&gt;window.__xss=1&lt;/script&gt;").replace("\\", "")) == 2
    links = re.findall(r"(?:src|href)=['\"]([^'\"]*)", page)
    assert links and all(link.startswith(("data:", "#")) for link in links)  # self-contained: nothing to fetch
    gallery = page[page.index("id='gallery'") : page.index("id='failures'")]
    assert gallery.count("<figure class='row'") == 5
    assert (
        "the media could not be read (FetchError): " in gallery and "gone.jpg: not found" in gallery
    )  # a placeholder, not a crash
    assert gallery.count("alt='frame ") == 3  # the video's sampled frames as a strip
    assert "<svg class='boxes' viewBox='0 0 800 600'" in gallery and "x='80' y='60' width='320' height='240'" in gallery
    failures = page[page.index("id='failures'") :]
    assert "data-stage='decode' data-type='ImageDecodeError'" in failures and "(2 rows)" in failures
    assert "data-stage='fetch' data-type='FetchError'" in failures and "s3://b/lost.jpg: not found" in failures
    plots = page[page.index("id='plots'") : page.index("id='gallery'")]
    assert plots.count("<svg") == 4 and "Finish reasons" in plots


def test_a_rerun_row_replaces_the_earlier_one(output):
    write_rows(
        output,
        [{"id": "lost", "task": "caption", "media": ["s3://b/lost.jpg"], "response": "Found.", "num_tiles": [1]}],
    )
    data = collect(output, StorageConfig())
    assert (data.rows, data.ok) == (8, 6) and ("fetch", "FetchError") not in data.error_groups


def test_reading_is_bounded_by_max_files(output):
    for n in range(5):
        write_rows(output, [{"id": f"more{n}", "task": "caption", "media": ["m.jpg"], "error": "fetch: FetchError: m"}])
    data = collect(output, StorageConfig(), max_files=3)
    assert (data.files_total, data.files_read, data.sampled) == (6, 3, True)
    assert data.rows < 8 + 5


def test_reading_is_bounded_by_rows_whatever_the_files_hold(output, monkeypatch):
    import internvl_batch.report.collect as collect_module

    failed = {"task": "caption", "media": ["m.jpg"], "error": "fetch: FetchError: m"}
    write_rows(output, [{**failed, "id": f"row{n:03d}"} for n in range(300)])  # one file of 300 rows
    monkeypatch.setattr(collect_module, "MAX_ROWS", 100)  # two files: at most 50 rows of each
    data = collect(output, StorageConfig())
    assert (data.files_total, data.files_read, data.files_cut, data.sampled) == (2, 2, 1, True)
    assert data.rows == 8 + 50  # the first file's 8 rows, the big file's first 50
    assert data.error_groups[("fetch", "FetchError")]["count"] == 1 + 50
    page = open(write_report(output, StorageConfig()), encoding="utf-8").read()
    assert "2 of 2 read, 1 of them only in part (a sample)" in page
