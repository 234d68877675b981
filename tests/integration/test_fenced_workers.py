"""The shared Ray cluster's workers are fenced to loopback (tests/socket_fence.py, installed by
tests/integration/conftest.py): a job test whose guard broke could not reach beyond this machine."""

import socket

import pytest

from tests.integration.conftest import FENCE_LOG, fence_violations

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # it starts the shared Ray cluster


def test_a_worker_cannot_connect_beyond_loopback(ray_local):
    import ray

    @ray.remote(num_cpus=0)
    def connect(address: tuple[str, int]) -> str:
        with socket.socket() as s:
            s.settimeout(2)
            try:
                s.connect(address)
            except Exception as exc:  # noqa: BLE001 - the refusal is the answer
                return type(exc).__name__
        return "connected"

    with socket.socket() as server:  # a loopback listener: allowed
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert ray.get(connect.remote(server.getsockname())) == "connected"
    before = fence_violations()
    assert ray.get(connect.remote(("192.0.2.1", 9))) == "FenceViolationError"  # TEST-NET-1: refused before sending
    refused = fence_violations()[len(before) :]
    assert len(refused) == 1 and "192.0.2.1" in refused[0]
    FENCE_LOG.write_text("".join(line + "\n" for line in before))  # this refusal was the point; keep the others
