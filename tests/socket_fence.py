"""A socket-level fence for tests: while it is on, this process may connect (or send a datagram) only to a
loopback address (127.0.0.0/8, ::1, ::ffff:127.x.y.z) or a Unix socket. Anything else is refused *before* the
system call, so no packet leaves, and recorded, so a test fails even when the code under test swallows the
exception.

It works on CPython's audit events (`sys.addaudithook`): `socket.connect` (also raised by `connect_ex`, and so by
`socket.create_connection`, urllib3, asyncio and aiohttp), `socket.sendto` and `socket.sendmsg`, raised before
the system call, by every socket of the `socket` module, whatever Python or C code called it. It judges the
literal address given to the call, without resolving anything: a host name handed to `connect()` (which would
resolve it inside the call) is refused. Sockets that C/C++ libraries open on their own (gRPC in Ray, the C
resolver of `getaddrinfo`) are not seen.

- `socket_fence()`: a context manager for one test (the fixture of `tests/integration/test_http_media.py`): it
  raises `FenceViolation` (a BaseException, so `except Exception` in the code under test cannot swallow it) and
  fails the test on exit if anything was refused. `fence.violations.clear()` acknowledges expected violations.
- `install_in_worker()`: fences a worker process for its whole life (called by `tests/fence_site/sitecustomize.py`
  in the shared test cluster's Ray workers; usable as a Ray `worker_process_setup_hook` too);
  there a violation raises `FenceViolationError` (an Exception: the row fails, as any fetch error), prints a
  loud line to stderr and appends it to the file named by `$SOCKET_FENCE_LOG`, if set, for the test to read.

Audit hooks cannot be removed: the hook is installed once per process and does nothing unless a fence is on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Iterator

LOG_ENV = "SOCKET_FENCE_LOG"
_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_UNIX = getattr(socket, "AF_UNIX", None)


class FenceViolation(BaseException):
    """Raised (in a test) where the code under test tried to reach a non-loopback address."""


class FenceViolationError(RuntimeError):
    """Raised (in a fenced Ray worker) where the code tried to reach a non-loopback address."""


class Fence:
    """One fence: what it refused (`violations`, one line each) and how it refuses."""

    def __init__(self, error: type[BaseException] = FenceViolation, log_path: str | None = None) -> None:
        self.error = error
        self.log_path = log_path
        self.violations: list[str] = []


_fences: list[Fence] = []  # the fences on, innermost last; the hook obeys the innermost
_install_lock = threading.Lock()
_installed = False


def is_loopback(host: object) -> bool:
    """Whether `host` (the host part of a socket address, as given to connect) is a loopback IP literal."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone is not part of the address
    except ValueError:
        return False  # a host name: the fence never resolves one, so it cannot vouch for it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def refusal(event: str, sock: object, address: object) -> str | None:
    """Why the fence refuses `event` on `sock` towards `address`, or None if it allows it."""
    family = getattr(sock, "family", None)
    if _UNIX is not None and family == _UNIX:
        return None
    if event == "socket.sendmsg" and address is None:
        return None  # a connected socket: its connect was judged
    if family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) and address else address
        if is_loopback(host):
            return None
    verb = "connect" if event == "socket.connect" else "send"
    return f"socket fence: {verb} to {address!r} refused (pid {os.getpid()}): only loopback addresses are allowed"


def _hook(event: str, args: tuple) -> None:
    if event not in _EVENTS:  # the fast path: every audit event of the process comes here
        return
    try:
        fence = _fences[-1]
    except IndexError:  # no fence on
        return
    reason = refusal(event, args[0], args[1])
    if reason is None:
        return
    fence.violations.append(reason)
    print(f"!!! {reason} !!!", file=sys.stderr, flush=True)
    if fence.log_path:
        with contextlib.suppress(OSError):
            fd = os.open(fence.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (reason + "\n").encode())
            finally:
                os.close(fd)
    raise fence.error(reason)


def install() -> None:
    """Add the audit hook to this process (once; it is inert while no fence is on)."""
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


@contextlib.contextmanager
def socket_fence() -> Iterator[Fence]:
    """Fence this process (all its threads) for the block; fail if anything was refused and not acknowledged
    (`fence.violations.clear()`)."""
    install()
    fence = Fence()
    _fences.append(fence)
    try:
        yield fence
    finally:
        _fences.remove(fence)
    if fence.violations:
        import pytest

        pytest.fail("\n".join(["the socket fence refused:", *fence.violations]), pytrace=False)


def install_in_worker() -> None:
    """A Ray `worker_process_setup_hook`: fence this worker process for good (see the module docstring).

    runtime_env={"worker_process_setup_hook": "tests.socket_fence.install_in_worker",
                 "env_vars": {"SOCKET_FENCE_LOG": "<tmp>/fence.log", "PYTHONPATH": "<repository root>"}}
    (the hook runs before a worker imports anything of the driver's, so `tests` must be on its PYTHONPATH)."""
    install()
    fence = Fence(FenceViolationError, os.environ.get(LOG_ENV) or None)
    _fences.insert(0, fence)  # the outermost fence: one a test turns on in this process still takes precedence
    print(f"socket fence: on in pid {os.getpid()} (only loopback addresses)", file=sys.stderr, flush=True)
