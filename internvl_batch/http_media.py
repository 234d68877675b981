"""Media over HTTP(S): bounded, retried where it makes sense, and never a way into the cluster's own network.

A manifest is untrusted input, so a URL in it must not make the job read the cloud's instance metadata
(credentials) or a service inside the cluster:

- every address a host name resolves to is checked *before* connecting, and the job connects to exactly the
  address it checked (no second lookup, so DNS rebinding between the check and the connection is impossible);
  the peer of the connected socket is checked again;
- link-local addresses (169.254.0.0/16, fe80::/10: the metadata endpoints of AWS, GCP and Azure) and the other
  metadata addresses (`fd00:ec2::254`, `100.100.100.200`) are always refused; loopback, private, shared
  (100.64.0.0/10) and other non-global addresses are refused unless `fetch.allow_private_networks`;
- an IPv6 address that leads to an IPv4 address is judged by that IPv4 address: IPv4-mapped (`::ffff:0:0/96`),
  NAT64 (the well-known prefix `64:ff9b::/96`, so IPv6-only clusters reach public IPv4 hosts), 6to4
  (`2002::/16`) and Teredo (`2001::/32`: its server and its client, refused if either is);
- URLs with credentials (`user:password@host`) are refused: they would not be sent, and the job must not
  pretend to authenticate;
- redirects are followed by hand, up to `fetch.max_redirects`, each hop through the same checks, and only to
  http(s).

Failures: 5xx, 429 and 408 responses, timeouts and resets are transient (`TransientHTTPError`, retried by the
fetcher, honouring Retry-After up to `fetch.max_retry_after_s`); other 4xx, refused addresses, unknown hosts and
oversized bodies are permanent (`FetchError`). `fetch.max_bytes` is enforced from Content-Length and again
while streaming; `fetch.deadline_s` bounds a whole request, so a server trickling one byte at a time cannot
hold a fetch for ever.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

from internvl_batch.config import FetchConfig
from internvl_batch.errors import AddressRefused, FetchError, TransientHTTPError

METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix; the IPv4 is the last 32 bits
REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 256 * 1024


def address_refusal(address: str, allow_private: bool) -> str | None:
    """What makes `address` (an IP literal) one the job must not connect to ("a link-local ... address"), or
    None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        else:
            embedded = _embedded_ipv4(ip)
            if embedded is not None:  # a transition address: where it leads is what counts
                for role, ipv4 in embedded:
                    reason = address_refusal(str(ipv4), allow_private)
                    if reason:
                        return f"{role} {ipv4}, {reason}"
                return None
    if str(ip) in METADATA_ADDRESSES or ip.is_link_local:
        return "a link-local or cloud metadata address"
    if ip.is_multicast or (ip.is_reserved and not ip.is_private):
        return "a multicast or reserved address"
    if not ip.is_global and not allow_private:
        return "a private, loopback or otherwise internal address (fetch.allow_private_networks is false)"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]] | None:
    """The IPv4 addresses a NAT64, 6to4 or Teredo address leads to, each with its role in words, or None."""
    if ip in NAT64_PREFIX:
        return [("a NAT64 address of", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))]
    if ip.sixtofour is not None:
        return [("a 6to4 address of", ip.sixtofour)]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [("a Teredo address with server", server), ("a Teredo address with client", client)]
    return None


def has_userinfo(url: str) -> bool:
    """Whether `url` names a user (`user:password@host`) to Python's parser or to urllib3's (they may differ)."""
    from urllib3.util import parse_url

    for userinfo in (lambda: urlsplit(url).username, lambda: parse_url(url).auth):
        try:
            if userinfo() is not None:
                return True
        except ValueError:  # unparseable: the request itself fails with its own error
            pass
    return False


CREDENTIALS_REFUSED = (
    "credentials in the URL (user:password@) are not supported for HTTP(S) media; use a URL that needs none "
    "(public or pre-signed), or an object-store URI (s3://, gs://, az://) with credentials from the environment"
)


def _guarded_pool_classes(allow_private: bool):
    """urllib3 connection pools whose connections resolve, check and connect as the module docstring says."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
    from urllib3.util.connection import create_connection

    def new_conn(self) -> socket.socket:
        try:
            infos = socket.getaddrinfo(self._dns_host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise FetchError(f"host {self.host!r} not found") from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        for address in addresses:  # one forbidden address is enough to refuse the host
            reason = address_refusal(address, allow_private)
            if reason:
                if address == self.host.strip("[]"):
                    raise AddressRefused(f"{address} is {reason}")
                raise AddressRefused(f"{self.host} resolves to {address}, {reason}")
        error: Exception | None = None
        for address in addresses:
            try:
                sock = create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                error = ConnectTimeoutError(self, f"connection to {self.host} ({address}) timed out")
                error.__cause__ = exc
                continue
            except OSError as exc:
                error = NewConnectionError(self, f"cannot connect to {self.host} ({address}): {exc}")
                continue
            peer = sock.getpeername()[0]
            reason = address_refusal(peer, allow_private)
            if reason:
                sock.close()
                raise AddressRefused(f"connected to {peer}, {reason}")
            return sock
        raise error  # type: ignore[misc]

    class GuardedHTTPConnection(HTTPConnection):
        _new_conn = new_conn

    class GuardedHTTPSConnection(HTTPSConnection):
        _new_conn = new_conn

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


class HttpReader:
    """GETs one URL per call (many threads may share it): `open(url)` -> a streaming response within limits."""

    def __init__(self, fetch: FetchConfig) -> None:
        try:
            import urllib3
        except ImportError:
            raise RuntimeError("reading http(s):// media needs urllib3: pip install urllib3") from None
        self.config = fetch
        self.manager = urllib3.PoolManager(
            num_pools=64,
            maxsize=fetch.threads,
            retries=False,
            timeout=urllib3.Timeout(connect=fetch.timeout_s, read=fetch.timeout_s),
            headers={"User-Agent": "internvl-batch", "Accept-Encoding": "identity"},
        )
        self.manager.pool_classes_by_scheme = _guarded_pool_classes(fetch.allow_private_networks)

    def read(self, url: str, max_bytes: int, limit_name: str, sink=None) -> bytes | int:
        """The body of `url` (or, with `sink`, the number of bytes written to it), following redirects."""
        deadline = time.monotonic() + self.config.deadline_s
        response = self._open(url)
        try:
            return self._body(url, response, max_bytes, limit_name, deadline, sink)
        except BaseException:
            response.close()  # the rest of the body is not wanted: drop the connection, never reuse it half-read
            raise
        finally:
            response.release_conn()

    def _open(self, url: str):
        from urllib3.exceptions import HTTPError as Urllib3Error

        for hop in range(self.config.max_redirects + 1):
            if has_userinfo(url):  # urllib3 would drop them silently; never repeat them in the message
                raise FetchError(
                    CREDENTIALS_REFUSED
                    if hop == 0
                    else "redirect to a URL with credentials (user:password@), not supported for HTTP(S) media"
                )
            try:
                response = self.manager.request("GET", url, preload_content=False, redirect=False)
            except FetchError:
                raise
            except Urllib3Error as exc:
                if "NameResolution" in type(exc).__name__:
                    raise FetchError(f"host of {url} not found") from None
                raise TransientHTTPError(f"{type(exc).__name__}: {exc}") from None
            if response.status in REDIRECTS:
                location = response.headers.get("Location")
                response.drain_conn()
                response.release_conn()
                if not location:
                    raise FetchError(f"HTTP {response.status} redirect without a Location")
                url = urljoin(url, location)
                if urlsplit(url).scheme not in ("http", "https"):
                    raise FetchError(f"redirect to a non-HTTP URL ({urlsplit(url).scheme}:)")
                continue
            if response.status >= 400:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                response.drain_conn()
                response.release_conn()
                if status >= 500 or status in (408, 429):
                    raise TransientHTTPError(f"HTTP {status}", retry_after)
                raise FetchError(_STATUS_REASONS.get(status, f"HTTP {status}"))
            return response
        raise FetchError(f"more than fetch.max_redirects={self.config.max_redirects} redirects")

    def _body(self, url: str, response, max_bytes: int, limit_name: str, deadline: float, sink) -> bytes | int:
        from urllib3.exceptions import HTTPError as Urllib3Error

        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"{declared} bytes exceeds {limit_name}={max_bytes}")
        parts, size = [], 0
        try:
            while chunk := response.read1(_CHUNK):  # whatever has arrived: the deadline is checked often
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"more than {max_bytes} bytes ({limit_name}) while streaming")
                if time.monotonic() > deadline:
                    raise TransientHTTPError(
                        f"the response took longer than fetch.deadline_s={self.config.deadline_s:g}"
                    )
                if sink is None:
                    parts.append(chunk)
                else:
                    sink.write(chunk)
        except Urllib3Error as exc:
            raise TransientHTTPError(f"{type(exc).__name__}: {exc}") from None
        return b"".join(parts) if sink is None else size


_STATUS_REASONS = {
    401: "HTTP 401 unauthorized",
    403: "HTTP 403 access denied",
    404: "HTTP 404 not found",
    410: "HTTP 410 gone",
}


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
