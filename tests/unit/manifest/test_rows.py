"""Row checks: the fast path for common rows gives exactly what the full checks give, for every kind of row."""

import itertools

import pytest

from internvl_batch.errors import ManifestError
from internvl_batch.manifest.rows import MediaResolver, checked_row, parse_row

IDS = ["a", 7, "", "  ", None, True, 1.5, ["x"]]
IMAGES = [
    "x.jpg",
    " s3://b/x.jpg ",
    "",
    "   ",
    "gs://b/x.jpg",
    "c:/x.jpg",
    "file:///x.jpg",
    "a:b/c.jpg",
    5,
    None,
    ["x.jpg"],
]
TEXTS = [None, "What?", "", 3]
EXTRAS = [
    {},
    {"images": ["a.jpg"]},
    {"video": "v.mp4"},
    {"document": "d.pdf"},
    {"bound": [1, 2]},
    {"num_segments": 4},
    {"label": "x"},
]


@pytest.mark.parametrize("extra", EXTRAS)
def test_fast_path_equals_full_checks(extra):
    for rid, image, question, task in itertools.product(IDS, IMAGES, TEXTS, TEXTS):
        raw = {
            k: v for k, v in (("id", rid), ("image", image), ("question", question), ("task", task)) if v is not None
        }
        raw.update(extra)
        assert parse_row(raw, "m.jsonl:1") == checked_row(raw, "m.jsonl:1"), raw
    error = ManifestError("line 1 is not valid JSON: x")
    assert parse_row(error, "m.jsonl:1") == checked_row(error, "m.jsonl:1")
    assert parse_row(error, "m.jsonl:1").error == "manifest: ManifestError: line 1 is not valid JSON: x"


def test_ids_are_optional_only_without_a_fallback():
    assert parse_row({"image": "/a.jpg"}, None).id is None and parse_row({"image": "/a.jpg"}, None).error is None
    assert parse_row({"image": "/a.jpg"}, "m.jsonl:3").error == "manifest: ManifestError: missing `id`"


def test_relative_paths_need_a_base():
    assert MediaResolver("s3://b/dir/m.jsonl")("x/../y.jpg") == "s3://b/dir/y.jpg"
    with pytest.raises(ManifestError, match="relative media path 'y.jpg' without a manifest"):
        MediaResolver(None)("y.jpg")


def test_document_rows():
    row = parse_row({"id": "d", "document": " s3://b/scans/d.pdf "}, "m.jsonl:1")
    assert (row.media_kind, row.media, row.media_data, row.error) == ("document", ("s3://b/scans/d.pdf",), None, None)
    embedded = parse_row({"id": "d", "document": {"bytes": b"%PDF-1.7 ...", "path": "d.pdf"}}, "m.jsonl:1")
    assert (embedded.media_kind, embedded.media, embedded.media_data) == ("document", ("d.pdf",), (b"%PDF-1.7 ...",))
    both = parse_row({"id": "d", "document": "d.pdf", "image": "x.jpg"}, "m.jsonl:1")
    assert both.error == "manifest: ManifestError: row has `image` and `document`; use one"
    assert parse_row({"id": "d", "document": "d.pdf", "bound": [1, 2]}, "m.jsonl:1").error.endswith(
        "apply to `video` rows only"
    )
