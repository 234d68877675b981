"""The fetcher's error classification against a real S3 endpoint (moto behind the fault proxy), without Ray:
permanent errors (404, 403) are answered after one attempt, transient ones (5xx, reset, timeout) retried with
backoff, and after the last retry the row's error says so. Fast: it runs with `-m "not slow"`."""

import pytest

from internvl_batch.config import FetchConfig, StorageConfig
from internvl_batch.errors import FetchError
from internvl_batch.storage import MediaFetcher
from tests.integration.fault_proxy import FaultProxy, Rule

pytestmark = pytest.mark.integration
BODY = b"\xff\xd8 some bytes"


@pytest.fixture
def proxied(s3, bucket, s3_endpoint):
    for name in ("ok", "flaky", "reset", "denied", "slow", "broken"):
        with s3.open(f"{bucket}/f/{name}.jpg", "wb") as f:
            f.write(BODY)
    with FaultProxy(s3_endpoint) as proxy:
        fetcher = MediaFetcher(
            StorageConfig(endpoint_url=proxy.url), FetchConfig(retries=2, backoff_s=0.01, timeout_s=0.5)
        )
        yield fetcher, proxy, f"s3://{bucket}/f"


def error_of(fetcher, uri):
    with pytest.raises(FetchError) as info:
        fetcher.fetch(uri)
    return str(info.value)


def test_permanent_errors_are_not_retried(proxied):
    fetcher, proxy, base = proxied
    proxy.add(Rule("/f/denied.jpg", "status", status=403))
    assert error_of(fetcher, f"{base}/absent.jpg") == f"{base}/absent.jpg: not found"
    assert error_of(fetcher, f"{base}/denied.jpg") == f"{base}/denied.jpg: access denied"
    assert proxy.requests_for("/f/absent.jpg") == 1 and proxy.requests_for("/f/denied.jpg") == 1


@pytest.mark.parametrize(
    "rule",
    [
        Rule("/f/flaky.jpg", "status", times=2, status=503),
        Rule("/f/broken.jpg", "status", times=2, status=500),
        Rule("/f/reset.jpg", "reset", times=1),
        Rule("/f/slow.jpg", "delay", times=1, seconds=2.0),
    ],
)
def test_transient_errors_are_retried_until_served(proxied, rule):
    fetcher, proxy, base = proxied
    proxy.add(rule)
    name = rule.path_contains.rsplit("/", 1)[-1]
    assert fetcher.fetch(f"{base}/{name}") == BODY
    assert proxy.requests_for(rule.path_contains) > rule.times  # the failed attempts, then the one served


def test_persistent_transient_errors_give_up_after_the_retries(proxied):
    fetcher, proxy, base = proxied
    proxy.add(Rule("/f/broken.jpg", "status", status=503))
    assert error_of(fetcher, f"{base}/broken.jpg").startswith(f"{base}/broken.jpg: gave up after 3 attempts: ")


@pytest.mark.parametrize("spill", [False, True], ids=["in-memory", "to-a-file"])
def test_an_endpoint_that_trickles_bytes_is_bounded_by_the_deadline(s3, bucket, s3_endpoint, tmp_path, spill):
    """One byte every 50 ms: no socket read ever waits 0.5 s (the client timeout), so only the read's total
    deadline (`fetch.deadline_s`) ends it; each attempt is cancelled at 1 s, and the third gives up."""
    import time

    from internvl_batch.storage import KindPolicy

    body = b"\\x00" * 400  # 20 s at this rate
    with s3.open(f"{bucket}/t/slow.mp4", "wb") as f:
        f.write(body)
    with FaultProxy(s3_endpoint) as proxy:
        proxy.add(Rule("/t/slow.mp4", "trickle", seconds=0.05))
        fetcher = MediaFetcher(
            StorageConfig(endpoint_url=proxy.url),
            FetchConfig(retries=2, backoff_s=0.01, timeout_s=0.5, deadline_s=1),
            policies={"video": KindPolicy(2**20, "video.max_bytes", spill_bytes=100 if spill else None)},
            temp_dir=str(tmp_path),
        )
        start = time.monotonic()
        with pytest.raises(FetchError) as info:
            fetcher.fetch(f"s3://{bucket}/t/slow.mp4", "video")
        elapsed = time.monotonic() - start
        assert str(info.value) == (
            f"s3://{bucket}/t/slow.mp4: gave up after 3 attempts: DeadlineExceeded: the read took longer than "
            "fetch.deadline_s=1"
        )
        assert 3 <= elapsed < 8, elapsed  # three attempts of ~1 s each, not 3 x 20 s
        # each attempt asked again: a HEAD, and a GET when the HEAD came back within the deadline (on a loaded
        # machine a HEAD alone can use up the second)
        assert proxy.requests_for("/t/slow.mp4") >= 3
        assert list(tmp_path.iterdir()) == []  # no partial temporary file left

        proxy.rules.clear()  # the same endpoint serving normally: the same fetcher reads the object
        fetched = fetcher.fetch(f"s3://{bucket}/t/slow.mp4", "video")
        if spill:
            assert open(fetched.path, "rb").read() == body
            fetched.cleanup()
        else:
            assert fetched == body
