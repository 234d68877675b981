"""Decoding in a child process (`stages/isolated_decoder.py`): the same rows as decoding in the actor, and real
crashes and hangs of the child (its test-only entry segfaults or sleeps) become those rows' errors while the
stage goes on."""

import time

import pyarrow as pa
import pytest

from internvl_batch.stages.isolated_decoder import TEST_FAULTS_ENV
from internvl_batch.stages.prepare import PrepareStage
from tests.helpers import job_config, request_table
from tests.media import encode, encode_pdf, encode_video, make_photo, scanned_page


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    (root / "photo.jpg").write_bytes(encode(make_photo(800, 600), "JPEG"))
    (root / "wide.png").write_bytes(encode(make_photo(1000, 250, seed=1), "PNG"))
    (root / "notes.jpg").write_bytes(b"not an image")
    (root / "clip.mp4").write_bytes(encode_video(60, 24.0))
    (root / "scan.pdf").write_bytes(encode_pdf([scanned_page(1, (448, 448)), scanned_page(2, (448, 448))]))
    (root / "crash.jpg").write_bytes(b"TEST-DECODER-SEGFAULT")
    (root / "hang.jpg").write_bytes(b"TEST-DECODER-HANG")
    return root


def stage(tiny_checkpoint, tmp_path, **preprocess):
    config = job_config(tiny_checkpoint, tmp_path / "out", preprocess=preprocess)
    return config, PrepareStage.from_config(config)


ROWS = [
    {"id": "photo", "image": "photo.jpg"},
    {"id": "pair", "images": ["photo.jpg", "wide.png"]},
    {"id": "text", "image": "notes.jpg"},
    {"id": "missing", "image": "absent.jpg"},
    {"id": "clip", "video": "clip.mp4", "num_segments": 4},
    {"id": "scan", "document": "scan.pdf"},
]


def test_the_same_rows_as_decoding_in_the_actor(tiny_checkpoint, media, tmp_path):
    config, isolated = stage(tiny_checkpoint, tmp_path)
    _, in_actor = stage(tiny_checkpoint, tmp_path, isolate_decoding=False)
    batch = request_table(ROWS, str(media / "m.jsonl"), config)
    got = pa.concat_tables(isolated(batch))
    want = pa.concat_tables(in_actor(batch))
    assert got.equals(want)
    assert got.num_rows == len(ROWS) + 1 and got.column("error").null_count == 5  # pages 1 and 2 of the scan
    isolated.decoder.close()


def test_a_crash_and_a_hang_cost_only_their_rows(tiny_checkpoint, media, tmp_path, monkeypatch):
    faults = tmp_path / "faults"
    faults.mkdir()
    monkeypatch.setenv(TEST_FAULTS_ENV, str(faults))  # the decoder processes inherit it when they start
    config, prepare = stage(tiny_checkpoint, tmp_path, decode_timeout_s=3)
    rows = [
        {"id": "a", "image": "photo.jpg"},
        {"id": "crash", "image": "crash.jpg"},
        {"id": "b", "images": ["photo.jpg", "wide.png"]},
        {"id": "hang", "image": "hang.jpg"},
        {"id": "c", "video": "clip.mp4", "num_segments": 4},
    ]
    started = time.monotonic()
    out = {
        r["id"]: r for r in pa.concat_tables(prepare(request_table(rows, str(media / "m.jsonl"), config))).to_pylist()
    }
    elapsed = time.monotonic() - started

    assert (
        out["crash"]["error"] == "decode: DecoderCrashed: the decoder process was killed by SIGSEGV on this row, twice"
    )
    assert len(list(faults.glob("crash-*"))) == 2  # tried once more in a new process, not a third time
    assert out["hang"]["error"].startswith("decode: DecodeTimeout: no result after preprocess.decode_timeout_s=3 s")
    assert all(out[k]["error"] is None and out[k]["pixels"] for k in ("a", "b", "c"))
    assert elapsed < 60  # the hang cost its timeout, not more

    # The stage (the actor) goes on with a new decoder process, and decodes exactly as in the actor.
    _, in_actor = stage(tiny_checkpoint, tmp_path, isolate_decoding=False)
    again = request_table(rows[:1], str(media / "m.jsonl"), config)
    assert pa.concat_tables(prepare(again)).equals(pa.concat_tables(in_actor(again)))
    prepare.decoder.close()


def test_a_runaway_allocation_costs_only_its_row(tiny_checkpoint, media, tmp_path):
    """A 10000 x 10000 PNG (under max_pixels) needs ~300 MB to decode: over a 400 MiB limit for the decoder
    process (which starts at ~170 MiB of address space), a MemoryError for that row; the next row decodes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (10000, 10000), (200, 100, 50)).save(buffer, "PNG")
    (tmp_path / "big.png").write_bytes(buffer.getvalue())
    (tmp_path / "photo.jpg").write_bytes((media / "photo.jpg").read_bytes())
    config, prepare = stage(tiny_checkpoint, tmp_path, decoder_memory_mb=400)
    rows = [{"id": "big", "image": "big.png"}, {"id": "photo", "image": "photo.jpg"}]
    out = {
        r["id"]: r
        for r in pa.concat_tables(prepare(request_table(rows, str(tmp_path / "m.jsonl"), config))).to_pylist()
    }
    assert out["big"]["error"] == ("decode: MemoryError: the decoder needed more than preprocess.decoder_memory_mb=400")
    assert out["photo"]["error"] is None and out["photo"]["num_tiles"] == [13]
    prepare.decoder.close()
