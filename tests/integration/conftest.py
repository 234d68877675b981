"""Real components for integration tests: a moto S3 server on 127.0.0.1 and a local Ray cluster."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAINTERNVLTEST0000",
    "AWS_SECRET_ACCESS_KEY": "internvl-batch-test-secret-" + "x" * 12,
    "AWS_DEFAULT_REGION": "us-east-1",
}


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this test process. The kernel may give the same free
    port to two binds in a row: a Ray node given one port for two of its servers (found in CI: its runtime-env
    agent's port answered with the metrics exporter's HTTP 405) fails in ways that look like Ray bugs."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


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


RAY_LOCAL_ARGS = {"address": "local", "num_cpus": 4, "include_dashboard": False, "log_to_driver": False}
_shared = {"up": False}  # whether this process's Ray is the shared cluster of `ray_local`
# Every worker of the shared cluster is fenced to loopback addresses (tests/socket_fence.py): a job whose
# address guard broke cannot reach the metadata service or the internet from a test; what it tried is logged here.
# The fence goes on through tests/fence_site/sitecustomize.py, on the PYTHONPATH the cluster's processes inherit
# (a runtime_env setup hook would do the same, but makes every worker start about twice as slowly).
FENCE_LOG = Path(tempfile.gettempdir()) / f"internvl-batch-test-fence-{os.getpid()}.log"
REPOSITORY = Path(__file__).resolve().parents[2]
FENCED_ENV = {
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPOSITORY / "tests" / "fence_site"), str(REPOSITORY), os.environ.get("PYTHONPATH")])
    ),
    "SOCKET_FENCE_LOG": str(FENCE_LOG),
}


def fence_violations() -> list[str]:
    """What the shared cluster's workers tried to reach beyond loopback (and were refused) so far."""
    return FENCE_LOG.read_text().splitlines() if FENCE_LOG.exists() else []


@pytest.fixture(scope="session")
def _ray_session():
    """Stops the shared local Ray cluster, if one is up, when the session ends; fails on any fence violation."""
    yield
    stop_shared_ray()
    violations = fence_violations()
    FENCE_LOG.unlink(missing_ok=True)
    if violations:
        pytest.fail(f"Ray workers tried to reach non-loopback addresses: {violations[:5]}")


@pytest.fixture(scope="module")
def ray_local(aws_env, _ray_session):
    """A local Ray cluster in this process (token authentication on, as `ray start` does), shared by the
    modules that use it: starting one costs ~10 s. Each job is its own Ray Data execution, so the modules do not
    see each other's work; a module that needs a cluster of its own calls `stop_shared_ray()` first."""
    import ray  # its authentication settings are set by tests/conftest.py, before any import of ray

    if not ray.is_initialized():
        start_shared_ray()
    yield


def start_shared_ray() -> None:
    """(Re)start the shared cluster, e.g. after setting environment variables its workers need."""

    stop_shared_ray()
    init_ray_with_env(FENCED_ENV, **RAY_LOCAL_ARGS)
    _shared["up"] = True


def init_ray_with_env(env: dict, **ray_args) -> None:
    """`ray.init(**ray_args)` with `env` set for the cluster's processes only: restored right after (Ray's
    processes inherit the environment they start with)."""
    import ray

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        ray.init(**ray_args)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def stop_shared_ray() -> None:
    """Shut the shared cluster down (a no-op when it is not up; never touches a module's own cluster)."""
    if _shared["up"]:
        import ray

        ray.shutdown()
        _shared["up"] = False


@pytest.fixture(scope="session")
def two_runs(_ray_session, aws_env, tmp_path_factory, tiny_checkpoint):
    """One output written by two runs of the real job on the shared cluster (`two_runs.py`), for every module
    that only reads it. Its tests also ask for `ray_local`, which keeps the cluster up for their module."""
    import ray

    from tests.integration.two_runs import write_two_runs

    if not ray.is_initialized():
        start_shared_ray()
    return write_two_runs(tmp_path_factory.mktemp("two-runs"), tiny_checkpoint)


@pytest.fixture(scope="session")
def two_node_jobs(s3, s3_endpoint, aws_env, tmp_path_factory, tiny_checkpoint):
    """Two jobs submitted at once with `ray job submit` to a two-node cluster of their own (`two_node_jobs.py`),
    which is stopped before this returns: what they left, for `test_job_submit.py` and `test_two_nodes.py`."""
    from tests.integration.two_node_jobs import run_two_node_jobs

    return run_two_node_jobs(s3, s3_endpoint, aws_env, tiny_checkpoint, tmp_path_factory.mktemp("two-nodes"))


def run_cli(args: list[str], tmp_path: Path, **kwargs) -> subprocess.CompletedProcess:
    """`internvl-batch ARGS` in a new process, as a user runs it (its own Ray; a cache under `tmp_path`)."""
    env = {**os.environ, "INTERNVL_BATCH_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "internvl_batch.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, **kwargs)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """`internvl-batch demo` run once, as a user runs it: (its process, its directory). Tests copy its output
    before they add to it."""
    tmp_path = tmp_path_factory.mktemp("demo-run")
    return run_cli(["demo", "--output", str(tmp_path / "demo")], tmp_path, cwd=tmp_path), tmp_path
