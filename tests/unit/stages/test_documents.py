"""PDF documents through the stages (no Ray): one row per page and task, whole-document errors as one row,
and the accounting that lets the job check and resume documents by their manifest key."""

import os

import numpy as np
import pyarrow as pa
import pytest

from internvl_batch.config import StorageConfig
from internvl_batch.done_keys import DoneRule, build_result_keys
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.imaging.document import PdfRenderer
from internvl_batch.keys import key_checksum, key_hashes
from internvl_batch.results import result_files, result_key_rows
from internvl_batch.stages.output import to_output_table
from internvl_batch.stages.write import write_batch, written_keys
from tests.helpers import job_config, prepare_rows
from tests.media import encode, encode_pdf, encrypt_pdf, make_photo, scanned_page

# Run ids as `output_dir.new_run_id` makes them (result files are named after them), later runs sorting later.
RUN_1, RUN_2, RUN_3, RUN_4 = (f"20260101T00000{n}000000Z-00000{n}" for n in "1234")
RUN_X = "20260101T000000000000Z-000000"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    (root / "scan.pdf").write_bytes(encode_pdf([scanned_page(n) for n in (1, 2, 3)]))
    (root / "locked.pdf").write_bytes(encrypt_pdf(encode_pdf([scanned_page(1)])))
    (root / "fake.pdf").write_bytes(encode(make_photo(64, 64), "JPEG"))
    (root / "long.pdf").write_bytes(encode_pdf([scanned_page(n) for n in range(1, 6)]))
    (root / "download").write_bytes(encode_pdf([scanned_page(n) for n in (1, 2)]))  # a PDF without .pdf
    (root / "photo.jpg").write_bytes(encode(make_photo(300, 200), "JPEG"))
    # an image whose metadata holds "%PDF-" early on (exported from a PDF tool): still an image
    (root / "exported.jpg").write_bytes(encode(make_photo(300, 200), "JPEG", comment=b"%PDF-1.7 export"))
    return root


@pytest.fixture(scope="module")
def config(tiny_checkpoint, tmp_path_factory):
    return job_config(
        tiny_checkpoint,
        tmp_path_factory.mktemp("out"),
        model={"dtype": "float32"},
        generation={"max_new_tokens": 4},
        preprocess={"max_pages": 4},
        task={"tasks": ["ocr", "caption"]},
    )


@pytest.fixture(scope="module")
def prepared(media, config):
    raw = [
        {"id": "scan", "document": "scan.pdf"},
        {"id": "locked", "document": "locked.pdf"},
        {"id": "fake", "document": "fake.pdf"},
        {"id": "long", "document": "long.pdf"},
        {"id": "sniffed", "image": "download"},
        {"id": "pair", "images": ["photo.jpg", "scan.pdf"]},
        {"id": "photo", "image": "photo.jpg"},
        {"id": "exported", "image": "exported.jpg"},
    ]
    return prepare_rows(config, raw, str(media / "m.jsonl"))


def rows_of(prepared):
    return {(r["id"], r["task"]): r for r in prepared.to_pylist()}


def test_one_row_per_page_and_task(prepared, media):
    rows = rows_of(prepared)
    for page in (1, 2, 3):
        for task in ("ocr", "caption"):
            row = rows[(f"scan#p{page}", task)]
            assert row["error"] is None and (row["page"], row["num_pages"]) == (page, 3)
            assert row["num_tiles"] == [7] and row["media_sizes"] == [{"width": 951, "height": 1344}]
    # The pixels are the rendered page's tiles, the page's own content (its corner's grey level).
    renderer = PdfRenderer(1, 12, 4)
    expected = [
        ImagePreprocessor().process_image(p.image).tiles
        for p in renderer.pages(renderer.open((media / "scan.pdf").read_bytes()))
    ]
    for page in (1, 2, 3):
        pixels = np.frombuffer(rows[(f"scan#p{page}", "ocr")]["pixels"], np.uint8).reshape(7, 448, 448, 3)
        assert np.array_equal(pixels, expected[page - 1]) and pixels[0, 5, 5, 0] == 20 * page
    assert rows[("scan#p1", "ocr")]["question"] != rows[("scan#p1", "caption")]["question"]


def test_a_pdf_in_an_image_column_is_read_as_a_document(prepared):
    rows = rows_of(prepared)
    assert {(k[0], r["page"], r["num_pages"]) for k, r in rows.items() if k[0].startswith("sniffed")} == {
        ("sniffed#p1", 1, 2),
        ("sniffed#p2", 2, 2),
    }


def test_whole_document_failures_are_one_row_per_task(prepared):
    rows = rows_of(prepared)
    assert rows[("locked", "ocr")]["error"] == (
        "decode: DocumentError: password-protected PDF (encrypted documents are not read)"
    )
    assert rows[("fake", "ocr")]["error"].startswith(
        "decode: DocumentError: not a PDF (the data looks like a JPEG image)"
    )
    assert rows[("long", "caption")]["error"] == "limits: LimitError: document has 5 pages, over preprocess.max_pages=4"
    assert rows[("pair", "ocr")]["error"].startswith("decode: DocumentError: a PDF cannot be one of several images")
    for key in ("locked", "fake", "long", "pair"):
        assert rows[(key, "ocr")]["page"] is None and rows[(key, "ocr")]["pixels"] is None
    assert rows[("photo", "ocr")]["error"] is None and rows[("photo", "ocr")]["page"] is None
    assert rows[("exported", "ocr")]["error"] is None and rows[("exported", "ocr")]["page"] is None
    assert len(rows) == (3 + 2 + 6) * 2  # 3 + 2 pages, 6 other rows, 2 tasks each


def test_written_keys_count_a_document_once_with_its_manifest_key(prepared):
    out = to_output_table(prepared, "tiny", [], RUN_1)
    keys, checksum = written_keys(out)
    expected_ids = ["scan", "locked", "fake", "long", "sniffed", "pair", "photo", "exported"]
    expected = key_hashes([i for i in expected_ids for _ in (0, 1)], ["ocr", "caption"] * len(expected_ids))
    assert keys == 16 and checksum == key_checksum(expected)
    # A page missing, or a page twice, breaks the checksum (and a missing last page the count).
    pages = out.filter(pa.array([r is not None for r in out.column("page").to_pylist()]))
    others = out.filter(pa.array([r is None for r in out.column("page").to_pylist()]))
    without_p2 = pa.concat_tables(
        [others, pages.filter(pa.array([i != "scan#p2" for i in pages.column("id").to_pylist()]))]
    )
    assert written_keys(without_p2)[1] != checksum
    assert written_keys(pa.concat_tables([out, pages.slice(0, 1)]))[1] != checksum


def test_resume_counts_a_document_done_only_when_all_its_pages_are_written(prepared, tmp_path):
    out = to_output_table(prepared, "tiny", [], RUN_1)
    is_scan = pa.array([i.startswith("scan#") for i in out.column("id").to_pylist()])
    scan_rows = out.filter(is_scan)
    # Run 1 wrote pages 1 and 2 of "scan" (in two files) and died; nothing else.
    write_batch(scan_rows.slice(0, 2), str(tmp_path), StorageConfig(), RUN_1)
    write_batch(scan_rows.slice(2, 2), str(tmp_path), StorageConfig(), RUN_1)

    def done(ok_only=False):
        plain, paged = result_key_rows(str(tmp_path), result_files(str(tmp_path), StorageConfig()), StorageConfig())
        keys = build_result_keys([plain], [paged], DoneRule(keep=True, retry_errors=ok_only))
        hashes = key_hashes(["scan", "scan"], ["ocr", "caption"])
        return keys.judge(hashes, np.zeros(2, np.uint64), ["ocr", "caption"]).done.tolist()

    assert done() == [False, False]
    # Run 2 redid the whole document (pages 1 and 2 again, then 3): distinct pages count once.
    write_batch(scan_rows, str(tmp_path), StorageConfig(), RUN_2)
    assert done() == [True, True]
    # With --retry-errors a document counts done only when every page has an ok row.
    assert done(ok_only=True) == [True, True]
    for file in result_files(str(tmp_path), StorageConfig()):
        os.remove(file)
    status = ["error" if i == "scan#p3" else "ok" for i in scan_rows.column("id").to_pylist()]
    write_batch(scan_rows.set_column(1, "status", pa.array(status)), str(tmp_path), StorageConfig(), RUN_4)
    assert done() == [True, True] and done(ok_only=True) == [False, False]


def test_the_later_run_decides_a_documents_shape_when_reading_results(prepared, tmp_path):
    """A PDF that failed as a whole in one run (one row `scan`) and was read in another (`scan#p1..3`): the
    reader keeps the later run's rows only, in-process and in the distributed pass, and never touches images."""
    from internvl_batch.results import read_results, result_records, superseded_positions

    out = to_output_table(prepared, "tiny", [], RUN_X)
    pages = out.filter(
        pa.array(
            [
                i.startswith("scan#") and t == "ocr"
                for i, t in zip(out.column("id").to_pylist(), out.column("task").to_pylist())
            ]
        )
    )
    whole = to_output_table(
        pa.table({"id": ["scan", "photo"], "task": ["ocr", "ocr"], "error": ["fetch: FetchError: timeout", None]}),
        "tiny",
        [],
        RUN_X,
    )
    storage = StorageConfig()

    def current():
        distributed = superseded_positions(
            result_records(str(tmp_path), result_files(str(tmp_path), storage), 0, storage, 1)
        )
        rows = read_results(str(tmp_path), columns=["status"]).to_pylist()
        return sorted((r["id"], r["status"]) for r in rows), len(distributed)

    write_batch(
        whole.set_column(whole.schema.get_field_index("run_id"), "run_id", pa.array([RUN_1] * 2)),
        str(tmp_path),
        storage,
        RUN_1,
    )
    write_batch(
        pages.set_column(pages.schema.get_field_index("run_id"), "run_id", pa.array([RUN_2] * 3)),
        str(tmp_path),
        storage,
        RUN_2,
    )
    assert current() == ([("photo", "ok"), ("scan#p1", "ok"), ("scan#p2", "ok"), ("scan#p3", "ok")], 1)
    write_batch(
        whole.slice(0, 1).set_column(whole.schema.get_field_index("run_id"), "run_id", pa.array([RUN_3])),
        str(tmp_path),
        storage,
        RUN_3,
    )
    assert current() == ([("photo", "ok"), ("scan", "error")], 4)  # the run-1 row and the three pages
