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
