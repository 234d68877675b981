"""HTTP(S) media against a real local HTTP server (`tests/media_server.py`): retries only where they make sense,
limits while streaming, redirects, and the refusals that keep a manifest out of the cluster's own network.

Every test runs inside the socket fence (`tests/socket_fence.py`): this process may connect to loopback addresses
only, so a guard that let a URL through to 169.254.169.254 fails the test instead of sending a packet. Other
addresses are judged through `address_refusal` or reached by name through a resolver stub, never connected to."""

import errno
import os
import socket
import time

import pytest

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.errors import AddressRefused, FetchError
from internvl_batch.http_media import CREDENTIALS_REFUSED, address_refusal
from internvl_batch.storage import KindPolicy, MediaFetcher
from tests.media_server import MediaServer, Rule
from tests.socket_fence import FenceViolation, socket_fence

pytestmark = pytest.mark.integration

PHOTO = bytes(range(256)) * 400  # 100 KiB


@pytest.fixture(autouse=True)
def fence():
    """No test of this module reaches beyond loopback; one that tries fails (even if the error is swallowed)."""
    with socket_fence() as on:
        yield on


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


@pytest.mark.parametrize(
    "address, what",
    [
        ("2002:a9fe:a9fe::", "a 6to4 address of 169.254.169.254, "),
        ("64:ff9b::a9fe:a9fe", "a NAT64 address of 169.254.169.254, "),
        ("2001:0:4136:e378:8000:63bf:5601:5601", "a Teredo address with client 169.254.169.254, "),
        ("::ffff:169.254.169.254", ""),
    ],
)
def test_a_redirect_to_an_ipv6_address_of_the_metadata_service_is_refused(server, address, what):
    server.rules.append(Rule("/creds", "redirect", location=f"http://[{address}]/latest/meta-data/"))
    with pytest.raises(AddressRefused) as info:
        fetcher().fetch(f"{server.url}/creds")
    assert str(info.value) == f"{server.url}/creds: {address} is {what}a link-local or cloud metadata address"
    assert server.hits["/creds"] == 1  # permanent: not retried


def test_credentials_in_the_url_are_refused_without_a_request(server):
    for url in (
        f"http://user:s3cret@127.0.0.1:{server.port}/photo.jpg",
        f"http://s3cret@127.0.0.1:{server.port}/photo.jpg",  # a token as the user name
    ):
        message = error_of(fetcher(), url)
        assert message.endswith(f": {CREDENTIALS_REFUSED}")
        assert "s3cret" not in message.replace(url, "<url>")  # the fetcher's URI prefix is redacted elsewhere
    assert sum(server.hits.values()) == 0  # the server saw no request


def test_a_redirect_to_a_url_with_credentials_is_refused(server):
    server.rules.append(Rule("/auth", "redirect", location=f"http://user:s3cret@127.0.0.1:{server.port}/photo.jpg"))
    message = error_of(fetcher(), f"{server.url}/auth")
    assert message == (
        f"{server.url}/auth: redirect to a URL with credentials (user:password@), not supported for HTTP(S) media"
    )
    assert server.hits == {"/auth": 1}  # not retried, and the hop's URL was never requested


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
        # IPv6 addresses that lead to an IPv4 address are judged by it (issue 26)
        ("::ffff:127.0.0.1", "internal", None),
        ("2002:7f00:1::", "internal", None),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", "metadata", "metadata"),  # 6to4 of 169.254.169.254
        ("2002:a00:1::", "internal", None),  # 6to4 of 10.0.0.1
        ("2002:808:808::1", None, None),  # 6to4 of 8.8.8.8
        ("64:ff9b::808:808", None, None),  # NAT64 of 8.8.8.8: IPv6-only clusters reach public IPv4 hosts
        ("64:ff9b::a9fe:a9fe", "metadata", "metadata"),  # NAT64 of 169.254.169.254
        ("64:ff9b::a00:1", "internal", None),  # NAT64 of 10.0.0.1
        ("64:ff9b::7f00:1", "internal", None),  # NAT64 of 127.0.0.1
        ("64:ff9b:1::808:808", "multicast", "multicast"),  # the local-use NAT64 prefix: not translated, reserved
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None, None),  # Teredo: server 65.54.227.120, client 8.8.8.8
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "internal", None),  # Teredo client 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:5601:5601", "metadata", "metadata"),  # Teredo client 169.254.169.254
        ("2001:0:a9fe:a9fe:8000:63bf:f7f7:f7f7", "metadata", "metadata"),  # Teredo server 169.254.169.254
        ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "internal", None),  # Teredo server 10.0.0.1
    ],
)
def test_address_policy(address, strict, permissive):
    words = {"metadata": "link-local or cloud metadata", "multicast": "multicast or reserved", "internal": "internal"}
    for allow, expected in ((False, strict), (True, permissive)):
        reason = address_refusal(address, allow)
        assert (reason is None) if expected is None else (words[expected] in reason), (address, allow, reason)


def test_a_name_resolving_to_a_6to4_address_of_loopback_is_refused(server, monkeypatch):
    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):  # a public-looking name whose DNS answers 6to4 of 127.0.0.1
        if host == "media.example":
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2002:7f00:1::", port, 0, 0))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    message = error_of(fetcher(allow_private_networks=False), f"http://media.example:{server.port}/photo.jpg")
    assert message.endswith(
        "media.example resolves to 2002:7f00:1::, a 6to4 address of 127.0.0.1, a private, loopback or otherwise "
        "internal address (fetch.allow_private_networks is false)"
    )


# --- the fence itself -------------------------------------------------------------------------------------------


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 (what the fence lets through)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def test_the_fence_refuses_a_non_loopback_connect_before_the_system_call(fence, listener):
    sock = socket.socket()
    sock.setblocking(False)
    with pytest.raises(FenceViolation, match=r"connect to \('192\.0\.2\.1', 9\) refused"):
        sock.connect(("192.0.2.1", 9))  # TEST-NET-1, the discard port
    # connect(2) never ran: a TCP socket that had sent a SYN to 192.0.2.1 would still be connecting to it (EALREADY),
    # or have a pending error; this one is fresh and connects to the loopback listener
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        with pytest.raises(OSError) as info:
            sock.getpeername()
        assert info.value.errno == errno.ENOTCONN
        sock.setblocking(True)
        sock.settimeout(5)
        sock.connect(listener.getsockname())
        accepted, peer = listener.accept()
        accepted.close()
        assert peer == sock.getsockname()
    assert fence.violations == [
        f"socket fence: connect to ('192.0.2.1', 9) refused (pid {os.getpid()}): only loopback addresses are allowed"
    ]
    fence.violations.clear()  # expected: acknowledged, so the fixture does not fail this test


@pytest.mark.parametrize(
    "family, kind, address, call",
    [
        (socket.AF_INET, socket.SOCK_STREAM, ("192.0.2.1", 9), "connect_ex"),
        (socket.AF_INET, socket.SOCK_STREAM, ("169.254.169.254", 80), "create_connection"),
        (socket.AF_INET6, socket.SOCK_STREAM, ("2001:db8::1", 9, 0, 0), "connect"),
        (socket.AF_INET6, socket.SOCK_STREAM, ("::ffff:192.0.2.1", 9, 0, 0), "connect"),
        (socket.AF_INET6, socket.SOCK_STREAM, ("64:ff9b::c000:201", 9, 0, 0), "connect"),
        (socket.AF_INET6, socket.SOCK_STREAM, ("2002:7f00:1::", 9, 0, 0), "connect"),  # 6to4 of loopback: not loopback
        (socket.AF_INET, socket.SOCK_STREAM, ("localhost", 9), "connect"),  # a name: never resolved, so refused
        (socket.AF_INET, socket.SOCK_DGRAM, ("192.0.2.1", 9), "sendto"),
        (socket.AF_INET, socket.SOCK_DGRAM, ("192.0.2.1", 9), "connect"),
    ],
)
def test_the_fence_refuses_every_way_out(fence, family, kind, address, call):
    with pytest.raises(FenceViolation):
        if call == "create_connection":
            socket.create_connection(address, timeout=1).close()
        else:
            with socket.socket(family, kind) as sock:
                sock.setblocking(False)
                if call == "sendto":
                    sock.sendto(b"x", address)
                else:
                    getattr(sock, call)(address)
    assert len(fence.violations) == 1 and repr(address) in fence.violations[0]
    fence.violations.clear()


def test_the_fence_lets_loopback_and_unix_sockets_through(listener, tmp_path):
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::ffff:127.0.0.1")):
        with socket.socket(family) as sock:
            sock.settimeout(5)
            sock.connect((host, listener.getsockname()[1]))
            listener.accept()[0].close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"x", ("127.0.0.2", 9))  # anywhere in 127.0.0.0/8
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(path)
        server.listen()
        client.connect(path)


def test_a_swallowed_violation_still_fails_the_test():
    with pytest.raises(pytest.fail.Exception, match="the socket fence refused:\nsocket fence: connect to"):
        with socket_fence():  # a fence of its own, inside the module's
            try:
                socket.create_connection(("192.0.2.1", 9), timeout=1)
            except BaseException:  # noqa: BLE001, S110 - code under test that hides every error
                pass
