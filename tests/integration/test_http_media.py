"""HTTP(S) media against a real local HTTP server (`tests/media_server.py`): retries only where they make sense,
limits while streaming, redirects, and the refusals that keep a manifest out of the cluster's own network."""

import socket
import time

import pytest

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.errors import FetchError
from internvl_batch.http_media import address_refusal
from internvl_batch.storage import KindPolicy, MediaFetcher
from tests.media_server import MediaServer, Rule

pytestmark = pytest.mark.integration

PHOTO = bytes(range(256)) * 400  # 100 KiB


def fetcher(**overrides) -> MediaFetcher:
    settings = dict(retries=2, backoff_s=0.01, timeout_s=5.0, deadline_s=3.0, allow_private_networks=True, threads=4)
    settings.update(overrides)
    return MediaFetcher(StorageConfig(), FetchConfig(**settings))


@pytest.fixture
def server():
    with MediaServer({"/photo.jpg": PHOTO, "/big.bin": b"x" * (8 * 2**20)}) as s:
        yield s


def error_of(fetch: MediaFetcher, url: str, kind: str = "image") -> str:
    with pytest.raises(FetchError) as info:
        fetch.fetch(url, kind)
    return str(info.value)


def test_served_bytes(server):
    assert fetcher().fetch(f"{server.url}/photo.jpg") == PHOTO


@pytest.mark.parametrize(
    "status, message",
    [(404, "HTTP 404 not found"), (403, "HTTP 403 access denied"), (401, "HTTP 401 unauthorized"), (400, "HTTP 400")],
)
def test_client_errors_are_not_retried(server, status, message):
    server.rules.append(Rule("/photo.jpg", "status", status=status))
    assert error_of(fetcher(), f"{server.url}/photo.jpg") == f"{server.url}/photo.jpg: {message}"
    assert server.hits["/photo.jpg"] == 1


def test_missing_file_is_404(server):
    assert error_of(fetcher(), f"{server.url}/absent.jpg").endswith("HTTP 404 not found")


def test_transient_errors_are_retried(server):
    server.rules += [Rule("/photo.jpg", "status", times=1, status=500), Rule("/photo.jpg", "reset", times=1)]
    assert fetcher().fetch(f"{server.url}/photo.jpg") == PHOTO
    assert server.hits["/photo.jpg"] == 3


def test_persistent_5xx_gives_up_after_the_retries(server):
    server.rules.append(Rule("/photo.jpg", "status", status=503))
    message = error_of(fetcher(retries=2), f"{server.url}/photo.jpg")
    assert "gave up after 3 attempts: TransientHTTPError: HTTP 503" in message
    assert server.hits["/photo.jpg"] == 3


def test_429_honours_retry_after_within_the_cap(server):
    server.rules.append(Rule("/photo.jpg", "status", times=1, status=429, retry_after="1"))
    t0 = time.monotonic()
    assert fetcher().fetch(f"{server.url}/photo.jpg") == PHOTO
    assert time.monotonic() - t0 >= 1.0  # waited as asked, not the 0.01 s backoff
    server.rules[:] = [Rule("/photo.jpg", "status", times=1, status=503, retry_after="3600")]
    t0 = time.monotonic()
    assert fetcher(max_retry_after_s=0.2).fetch(f"{server.url}/photo.jpg") == PHOTO
    assert time.monotonic() - t0 < 30  # an hour was asked for; the cap is 0.2 s


def test_a_trickling_server_cannot_hold_a_fetch(server):
    server.files["/slow.jpg"] = b"y" * 200
    server.rules.append(Rule("/slow.jpg", "trickle", seconds=0.05))
    message = error_of(fetcher(retries=0, deadline_s=1.0), f"{server.url}/slow.jpg")
    assert "took longer than fetch.deadline_s=1" in message
    assert server.bytes_sent["/slow.jpg"] < 200


def test_size_limit_from_content_length_and_while_streaming(server):
    limited = MediaFetcher(StorageConfig(), FetchConfig(allow_private_networks=True, max_bytes=2**20, retries=0))
    assert error_of(limited, f"{server.url}/big.bin").endswith(f"{8 * 2**20} bytes exceeds fetch.max_bytes={2**20}")
    server.rules.append(Rule("/big.bin", "no_length"))
    message = error_of(limited, f"{server.url}/big.bin")
    assert message.endswith(f"more than {2**20} bytes (fetch.max_bytes) while streaming")
    assert limited.fetch(f"{server.url}/photo.jpg") == PHOTO  # the pool is still usable after aborted downloads


def test_videos_stream_to_a_temporary_file(server, tmp_path):
    fetch = MediaFetcher(
        StorageConfig(),
        FetchConfig(allow_private_networks=True),
        {"video": KindPolicy(2**30, "video.max_bytes", spill_bytes=0)},
        temp_dir=str(tmp_path),
    )
    local = fetch.fetch(f"{server.url}/big.bin", "video")
    assert open(local.path, "rb").read() == server.files["/big.bin"]
    local.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_redirects_followed_up_to_the_limit(server):
    server.rules.append(Rule("/moved.jpg", "redirect", location="/photo.jpg"))
    assert fetcher().fetch(f"{server.url}/moved.jpg") == PHOTO
    server.rules.append(Rule("/loop", "redirect", location="/loop"))
    assert error_of(fetcher(max_redirects=5), f"{server.url}/loop").endswith(
        "more than fetch.max_redirects=5 redirects"
    )
    assert server.hits["/loop"] == 6  # not retried: a loop is permanent


def test_a_redirect_to_the_metadata_service_is_refused_before_connecting(server):
    server.rules.append(Rule("/creds", "redirect", location="http://169.254.169.254/latest/meta-data/iam/"))
    message = error_of(fetcher(), f"{server.url}/creds")
    assert message.endswith("creds: 169.254.169.254 is a link-local or cloud metadata address")
    server.rules.append(Rule("/creds6", "redirect", location="http://[fe80::1]/"))
    assert "is a link-local" in error_of(fetcher(), f"{server.url}/creds6")
    server.rules.append(Rule("/file", "redirect", location="file:///etc/passwd"))
    assert error_of(fetcher(), f"{server.url}/file").endswith("redirect to a non-HTTP URL (file:)")


def test_internal_addresses_are_refused_by_default(server, monkeypatch):
    strict = fetcher(allow_private_networks=False)
    for host in ("127.0.0.1", "localhost"):  # an address, and a name that resolves to one
        message = error_of(strict, f"http://{host}:{server.port}/photo.jpg")
        assert "a private, loopback or otherwise internal address (fetch.allow_private_networks is false)" in message
    assert server.hits["/photo.jpg"] == 0  # refused before connecting
    # a redirect hop into the internal network is checked like the first URL (allowed public hop -> internal)
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):  # a public-looking name whose DNS answers with a loopback address
        return (
            real("127.0.0.1", *args[:1], type=socket.SOCK_STREAM)
            if host == "media.example"
            else real(host, *args, **kwargs)
        )

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    message = error_of(strict, f"http://media.example:{server.port}/photo.jpg")
    assert message.endswith(
        "photo.jpg: media.example resolves to 127.0.0.1, a private, loopback or otherwise internal "
        "address (fetch.allow_private_networks is false)"
    )
    assert server.hits["/photo.jpg"] == 0


def test_the_address_checked_is_the_address_connected_to(server, monkeypatch):
    # DNS rebinding: a resolver that answers differently each time. The fetcher looks a host up once per
    # connection and connects to exactly what it checked; a second lookup would reach the other address.
    real, answers = socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):
        if host != "media.example":
            return real(host, port, *args, **kwargs)
        target = "127.0.0.1" if not answers else "192.0.2.1"  # TEST-NET-1: nothing answers there
        answers.append(target)
        return real(target, port, type=socket.SOCK_STREAM)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    assert fetcher(retries=0).fetch(f"http://media.example:{server.port}/photo.jpg") == PHOTO
    assert answers == ["127.0.0.1"]


@pytest.mark.parametrize(
    "address, strict, permissive",
    [
        ("169.254.169.254", "metadata", "metadata"),
        ("fe80::1", "metadata", "metadata"),
        ("::ffff:169.254.169.254", "metadata", "metadata"),
        ("fd00:ec2::254", "metadata", "metadata"),
        ("100.100.100.200", "metadata", "metadata"),
        ("224.0.0.1", "multicast", "multicast"),
        ("127.0.0.1", "internal", None),
        ("::1", "internal", None),
        ("10.1.2.3", "internal", None),
        ("172.16.0.1", "internal", None),
        ("192.168.1.10", "internal", None),
        ("100.64.0.1", "internal", None),
        ("0.0.0.0", "internal", None),
        ("fd12::1", "internal", None),
        ("8.8.8.8", None, None),
        ("2001:4860:4860::8888", None, None),
    ],
)
def test_address_policy(address, strict, permissive):
    words = {"metadata": "link-local or cloud metadata", "multicast": "multicast or reserved", "internal": "internal"}
    for allow, expected in ((False, strict), (True, permissive)):
        reason = address_refusal(address, allow)
        assert (reason is None) if expected is None else (words[expected] in reason), (address, allow, reason)
