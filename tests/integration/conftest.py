"""Real components for integration tests: a moto S3 server on 127.0.0.1 and a local Ray cluster."""

from __future__ import annotations

import os
import secrets
import socket

import pytest

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAINTERNVLTEST0000",
    "AWS_SECRET_ACCESS_KEY": "internvl-batch-test-secret-" + "x" * 12,
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def aws_env():
    """Credentials for the moto server, in the environment only (as users provide them)."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield AWS_ENV
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_endpoint(aws_env):
    """moto's S3 server on 127.0.0.1 over HTTP, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3(s3_endpoint):
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)


@pytest.fixture
def bucket(s3):
    name = "test-" + secrets.token_hex(4)
    s3.mkdir(name)
    return name


@pytest.fixture(scope="module")
def ray_local(aws_env):
    """A local Ray cluster for one test module (token authentication on, as `ray start` does)."""
    import ray  # its authentication settings are set by tests/conftest.py, before any import of ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
