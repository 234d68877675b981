"""No row is ever lost: a corpus of bad input and injected faults through the real job (Ray, moto S3 behind a
fault-injecting proxy), and a model replica killed mid-run."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from internvl_batch.config_loader import load_config
from internvl_batch.job import main, run_job
from internvl_batch.output_dir import summary_path
from internvl_batch.results import read_results
from tests.integration.conftest import fence_violations
from tests.integration.fault_proxy import FaultProxy, Rule
from tests.integration.ray_nodes import descendants
from tests.media import (
    encode,
    encode_audio_only,
    encode_pdf,
    encode_video,
    encrypt_pdf,
    make_photo,
    png_with_broken_crc,
    png_with_header_size,
    scanned_page,
)
from tests.media_server import MediaServer
from tests.media_server import Rule as HttpRule

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def put(s3, path, data):
    with s3.open(path, "wb") as f:
        f.write(data)


def bomb_png() -> bytes:
    """A real decompression bomb: 20000 x 20000 pixels (400 MP) of zeros, a few hundred KB compressed."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


# (id, manifest row without id (None: raw line), expected error prefix or None for success)
def corpus(bucket: str, local_dir: Path, web: str):
    return [
        ("good-jpeg", {"image": "m/photo.jpg"}, None),
        ("good-png", {"image": "m/photo.png", "question": "What is this?"}, None),
        ("flaky-503", {"image": "m/flaky.jpg"}, None),  # 503 SlowDown twice, then served
        ("flaky-reset", {"image": "m/reset.jpg"}, None),  # connection reset once, then served
        ("missing-object", {"image": "m/absent.jpg"}, f"fetch: FetchError: s3://{bucket}/m/absent.jpg: not found"),
        ("access-denied", {"image": "m/denied.jpg"}, f"fetch: FetchError: s3://{bucket}/m/denied.jpg: access denied"),
        ("timeout", {"image": "m/slow.jpg"}, f"fetch: FetchError: s3://{bucket}/m/slow.jpg: gave up after 3 attempts"),
        ("truncated", {"image": "m/truncated.jpg"}, "decode: ImageDecodeError: corrupt or truncated JPEG"),
        ("zero-bytes", {"image": "m/empty.jpg"}, "decode: ImageDecodeError: empty file (0 bytes)"),
        ("not-an-image", {"image": "m/notes.jpg"}, "decode: ImageDecodeError: not an image"),
        ("bomb", {"image": "m/bomb.png"}, "decode: PixelLimitError: "),
        (
            "huge-header",
            {"image": "m/huge-header.png"},
            "decode: PixelLimitError: 10000000000 pixels exceeds max_pixels",
        ),
        ("broken-crc", {"image": "m/broken-crc.png"}, "decode: ImageDecodeError: corrupt or truncated PNG"),
        ("directory", {"image": str(local_dir)}, f"fetch: FetchError: {local_dir}: is a directory"),
        ("unknown-scheme", {"image": "ftp://host/a.jpg"}, "manifest: ManifestError: unsupported URI scheme 'ftp'"),
        (
            "both",
            {"image": "m/photo.jpg", "images": ["m/photo.png"]},
            "manifest: ManifestError: row has `image` and `images`",
        ),
        ("too-long", {"image": "m/big.jpg"}, "prompt: PromptError: prompt of "),
        ("too-many-images", {"images": ["m/photo.jpg"] * 5}, "limits: LimitError: row has 5 images"),
        ("corrupt-video", {"video": "m/corrupt.mp4"}, "decode: VideoDecodeError: not a readable video"),
        ("audio-only", {"video": "m/audio.mp4"}, "decode: VideoDecodeError: no video stream"),
        ("bound-outside", {"video": "m/clip.mp4", "bound": [50, 60]}, "decode: BoundError: bound [50.0, 60.0] s"),
        ("good-video", {"video": "m/clip.mp4", "num_segments": 4}, None),
        # PDF documents: a good two-page scan has one row per page (ids good-pdf#p1, good-pdf#p2)
        ("good-pdf", {"document": "m/scan.pdf", "task": "ocr"}, None),
        (
            "pdf-not-a-pdf",
            {"document": "m/fake.pdf"},
            "decode: DocumentError: not a PDF (the data looks like a JPEG image)",
        ),
        ("pdf-password", {"document": "m/locked.pdf"}, "decode: DocumentError: password-protected PDF"),
        (
            "pdf-truncated",
            {"document": "m/cut.pdf"},
            "decode: DocumentError: unreadable PDF (corrupt, truncated, or without pages)",
        ),
        # Rows whose id cannot be read are named <manifest>:<line>; line numbers count the empty line 3.
        # HTTP(S) media from a real local server (tests/media_server.py); the job is allowed private networks
        ("http-ok", {"image": f"{web}/photo.jpg"}, None),
        ("http-429", {"image": f"{web}/busy.jpg"}, None),  # 429 with Retry-After: 1 once, then served
        ("http-404", {"image": f"{web}/absent.jpg"}, f"fetch: FetchError: {web}/absent.jpg: HTTP 404 not found"),
        ("http-403", {"image": f"{web}/denied.jpg"}, f"fetch: FetchError: {web}/denied.jpg: HTTP 403 access denied"),
        (
            "http-500",
            {"image": f"{web}/broken.jpg"},
            f"fetch: FetchError: {web}/broken.jpg: gave up after 3 attempts: TransientHTTPError: HTTP 500",
        ),
        (
            "http-slowloris",
            {"image": f"{web}/trickle.jpg"},
            f"fetch: FetchError: {web}/trickle.jpg: gave up after 3 attempts: TransientHTTPError: the response took longer than fetch.deadline_s=1",
        ),
        (
            "http-oversized",
            {"image": f"{web}/huge.jpg"},
            f"fetch: FetchError: {web}/huge.jpg: 8388608 bytes exceeds fetch.max_bytes=4194304",
        ),
        (
            "http-redirect-loop",
            {"image": f"{web}/loop.jpg"},
            f"fetch: FetchError: {web}/loop.jpg: more than fetch.max_redirects=5 redirects",
        ),
        (
            "http-to-metadata",
            {"image": f"{web}/creds.jpg"},
            f"fetch: AddressRefused: {web}/creds.jpg: 169.254.169.254 is a link-local or cloud metadata address",
        ),
        (
            "m.jsonl:37",
            b'{"id": "bad-utf8", "image": "m/photo.jpg", "question": "caf\xe9"}',
            "manifest: ManifestError: line 37 is not valid UTF-8",
        ),
        ("m.jsonl:38", b'{"id": "broken json",', "manifest: ManifestError: line 38 is not valid JSON"),
        ("m.jsonl:39", {"image": "m/photo.jpg"}, "manifest: ManifestError: missing `id`"),
        # Hostile rows (issue 26): text that is not Unicode, local files outside fetch.local_roots (this job
        # allows only its tmp directory), credentials in URIs (written REDACTED).
        (
            "m.jsonl:40",
            b'{"id": "\\ud800", "image": "m/photo.jpg"}',
            "manifest: ManifestError: `id` is not valid Unicode text (it holds a lone surrogate escape",
        ),
        (
            "surrogate-question",
            b'{"id": "surrogate-question", "image": "m/photo.jpg", "question": "bad \\udfff"}',
            "manifest: ManifestError: `question` is not valid Unicode text (it holds a lone surrogate escape",
        ),
        (
            "local-outside-roots",
            {"image": "/etc/hostname"},
            f"fetch: PathRefused: /etc/hostname: outside fetch.local_roots ({local_dir.parent})",
        ),
        (
            "local-climbing-out",
            {"image": f"{local_dir}/../../../etc/hostname"},
            f"fetch: PathRefused: {local_dir}/../../../etc/hostname: outside fetch.local_roots",
        ),
        (
            "proc-environ",
            {"image": "/proc/self/environ"},
            "fetch: PathRefused: /proc/self/environ: 'proc' files are never read as media",
        ),
        (
            "file-other-host",
            {"image": "file://fileserver/etc/hostname"},
            "fetch: PathRefused: file://fileserver/etc/hostname: file:// URIs must name this machine",
        ),
        (
            "local-secret-text",
            {"image": str(local_dir.parent / "secret.jpg")},
            "decode: ImageDecodeError: not an image: format not recognised (43 bytes that look like text)",
        ),
        (
            "http-presigned",
            {"image": f"{web}/absent.jpg?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=f00dcafe"},
            f"fetch: FetchError: {web}/absent.jpg?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED: HTTP 404",
        ),
        (
            "http-userinfo",
            {"image": web.replace("http://", "http://alice:hunter2@") + "/photo.jpg"},
            f"fetch: FetchError: {web.replace('http://', 'http://REDACTED@')}/photo.jpg: credentials in the URL",
        ),
    ]


def test_bad_input_and_transient_faults(ray_local, s3, bucket, s3_endpoint, tiny_checkpoint, tmp_path):
    photo = encode(make_photo(448, 448), "JPEG")
    files = {
        "photo.jpg": photo,
        "photo.png": encode(make_photo(448, 448, seed=1), "PNG"),
        "flaky.jpg": photo,
        "reset.jpg": photo,
        "denied.jpg": photo,
        "slow.jpg": photo,
        "truncated.jpg": encode(make_photo(640, 480), "JPEG")[:900],
        "empty.jpg": b"",
        "notes.jpg": b"meeting notes, not a picture",
        "bomb.png": bomb_png(),
        "huge-header.png": png_with_header_size(100_000, 100_000),
        "broken-crc.png": png_with_broken_crc(),
        "big.jpg": encode(make_photo(800, 600), "JPEG"),
        "clip.mp4": encode_video(60, 30.0),
        "corrupt.mp4": encode_video(60, 30.0)[:200] + bytes(4000),
        "audio.mp4": encode_audio_only(),
        "scan.pdf": encode_pdf([scanned_page(1, (448, 448)), scanned_page(2, (448, 448))]),
        "fake.pdf": photo,
        "locked.pdf": encrypt_pdf(encode_pdf([scanned_page(1, (448, 448))])),
        "cut.pdf": encode_pdf([scanned_page(1, (448, 448))])[:3000],
    }
    for name, data in files.items():
        put(s3, f"{bucket}/m/{name}", data)
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENG\n")  # 43 bytes
    web = MediaServer({f"/{name}": photo for name in ("photo.jpg", "busy.jpg", "denied.jpg", "broken.jpg")})
    web.files.update({"/trickle.jpg": photo[:300], "/huge.jpg": b"\xff" * 8 * 2**20})
    web.rules += [
        HttpRule("/busy.jpg", "status", times=1, status=429, retry_after="1"),
        HttpRule("/denied.jpg", "status", status=403),
        HttpRule("/broken.jpg", "status", status=500),
        HttpRule("/trickle.jpg", "trickle", seconds=0.02),
        HttpRule("/loop.jpg", "redirect", location="/loop.jpg"),
        HttpRule("/creds.jpg", "redirect", location="http://169.254.169.254/latest/meta-data/"),
    ]
    rows = corpus(bucket, tmp_path / "a-directory", web.url)
    lines = []
    for row_id, row, _ in rows:
        lines.append(
            row
            if isinstance(row, bytes)
            else json.dumps({"id": row_id, **row} if not row_id.startswith("m.jsonl:") else row).encode()
        )
    lines.insert(2, b"")  # an empty line: not a row, skipped
    put(s3, f"{bucket}/m.jsonl", b"\n".join(lines) + b"\n")

    with FaultProxy(s3_endpoint) as proxy, web:
        proxy.add(Rule("/m/flaky.jpg", "status", times=2, status=503))
        proxy.add(Rule("/m/reset.jpg", "reset", times=1))
        proxy.add(Rule("/m/denied.jpg", "status", status=403))
        proxy.add(Rule("/m/slow.jpg", "delay", seconds=4.0))
        config = load_config(
            None,
            base={
                "input": {"manifests": f"s3://{bucket}/m.jsonl"},
                # Most rows fail here: above max_error_fraction the job exits 1, after writing every row.
                "output": {"path": f"s3://{bucket}/out", "max_error_fraction": 0.5, "rows_per_file": 5},
                "model": {"path": str(tiny_checkpoint)},
                "generation": {"max_new_tokens": 3, "max_input_tokens": 2000},
                "preprocess": {"max_images_per_row": 4},
                "fetch": {
                    "retries": 2,
                    "backoff_s": 0.05,
                    "timeout_s": 1.0,
                    "deadline_s": 1.0,
                    "max_bytes": 4 * 2**20,
                    "allow_private_networks": True,
                    "local_roots": [str(tmp_path)],
                },
                "storage": {"endpoint_url": proxy.url},
                "resources": {"cpu_actors": 1, "cpu_batch_size": 4, "gpu_replicas": 1, "gpu_batch_size": 8},
            },
        )
        assert main(config=config) == 1
        denied_requests = proxy.requests_for("/m/denied.jpg")
    with s3.open(summary_path(f"{bucket}/out")) as f:
        summary = json.loads(f.read())
    assert summary["status"] == "failed" and "max_error_fraction" in summary["problems"][0]

    current = {r["id"]: r for r in read_results(f"s3://{bucket}/out", config.storage).to_pylist()}
    pages = {"good-pdf": ["good-pdf#p1", "good-pdf#p2"]}
    # exactly one row per input row (per page of a document)
    assert sorted(current) == sorted(out_id for row_id, _, _ in rows for out_id in pages.get(row_id, [row_id]))
    for row_id, _, expected in rows:
        for out_id in pages.get(row_id, [row_id]):
            got = current[out_id]
            if expected is None:
                assert got["status"] == "ok" and got["response"] is not None, (out_id, got["error"])
            else:
                assert got["status"] == "error" and got["error"].startswith(expected), (out_id, got["error"])
    assert [(current[i]["page"], current[i]["num_pages"]) for i in pages["good-pdf"]] == [(1, 2), (2, 2)]
    assert denied_requests == 1  # a permanent error is not retried
    assert summary["rows_processed"] == len(rows) + 1 and summary["rows_ok"] == 9
    assert summary["results_written"] == len(rows) and summary["one_row_per_input"]
    assert web.hits["/denied.jpg"] == 1 and web.hits["/loop.jpg"] == 6  # permanent: not retried
    assert summary["manifest"]["blank_lines"] == 1
    assert fence_violations() == []  # the guards held: no worker tried to leave loopback (tests/socket_fence.py)
    # Nothing the job wrote holds a credential or a local file's contents; the media column keeps the path.
    written = json.dumps([current, summary])
    assert not any(secret in written for secret in ("hunter2", "f00dcafe", "AKIAEXAMPLE", "wJalrXUtnFEMIK7MDENG"))
    assert current["http-presigned"]["media"] == [
        f"{web.url}/absent.jpg?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED"
    ]


def _generate_actor_pids() -> list[int]:
    """This test's model replicas: processes of the local Ray this test process started (its descendants),
    never another user's Ray workers on the same machine."""
    pids = []
    for pid in descendants(os.getpid()):
        try:
            if b"MapBatches(GenerateStage)" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return pids


def test_killed_model_replica_is_replaced(ray_local, tmp_path, tiny_checkpoint):
    sizes = [(448, 448), (800, 600), (640, 427)]
    rows = []
    for i in range(24):
        (tmp_path / f"{i}.jpg").write_bytes(encode(make_photo(*sizes[i % 3], seed=i), "JPEG"))
        rows.append({"id": f"img{i}", "image": f"{i}.jpg"})
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    config = load_config(
        None,
        base={
            "input": {"manifests": str(tmp_path / "m.jsonl")},
            "output": {"path": str(out), "rows_per_file": 2},
            "model": {"path": str(tiny_checkpoint)},
            "generation": {"max_new_tokens": 24},
            "resources": {
                "cpu_actors": 1,
                "cpu_batch_size": 2,
                "gpu_replicas": 1,
                "gpu_batch_size": 2,
                "rows_per_block": 2,
            },
        },
    )
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(summary=run_job(config)), daemon=True)
    runner.start()
    killed = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and killed is None:
        files = list(out.rglob("part-*.parquet")) if out.exists() else []
        pids = _generate_actor_pids()
        if files and pids and runner.is_alive():
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    assert killed is not None, "the run ended before a model replica could be killed"
    runner.join(timeout=600)
    assert "summary" in result, "the job did not finish after its model replica was killed"
    assert killed not in _generate_actor_pids()
    current = read_results(str(out))
    assert sorted(current.column("id").to_pylist()) == sorted(r["id"] for r in rows)
    assert set(current.column("status").to_pylist()) == {"ok"}
