"""A real Label Studio on 127.0.0.1 for the export tests: the `label-studio` package from PyPI in its own
virtual environment (its Django pins are not ours), made under .cache/label-studio-venv on first use, started on
a free port with a fresh data folder and a known API token, stopped by its process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.conftest import free_port

VENV = Path(__file__).resolve().parents[2] / ".cache" / "label-studio-venv"
TOKEN = "0123456789abcdef0123456789abcdef01234567"
# Label Studio's calls home, off: the test's traffic stays on 127.0.0.1.
QUIET = {"COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}


def label_studio_command() -> Path:
    """The `label-studio` command, installed with pip into its own venv on first use (a marker file says the
    install finished)."""
    done = VENV / ".installed"
    if done.exists():
        return VENV / "bin" / "label-studio"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)
    pip = [str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "label-studio>=1.20"]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=1200)
    if installed.returncode != 0:
        last = (installed.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"pip could not install label-studio into {VENV}: {last}")
    done.write_text("ok\n")
    return VENV / "bin" / "label-studio"


class LabelStudio:
    def __init__(self, url: str):
        self.url = url

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Token {TOKEN}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")


@contextmanager
def label_studio_server(tmp_path: Path):
    """A Label Studio on 127.0.0.1 (a LabelStudio client for its API), stopped after."""
    command = label_studio_command()
    port, data = free_port(), tmp_path / "label-studio-data"
    data.mkdir()
    env = {**os.environ, **QUIET, "LABEL_STUDIO_BASE_DATA_DIR": str(data)}
    args = [str(command), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
    args += ["--data-dir", str(data), "--username", "test@example.com", "--password", "not-a-secret-1"]
    args += ["--user-token", TOKEN, "--enable-legacy-api-token"]
    log = open(tmp_path / "label-studio.log", "wb")  # noqa: SIM115 (closed after the server)
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (tmp_path / "label-studio.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"Label Studio did not start (exit {proc.poll()}): {tail}")
            time.sleep(1)
        yield LabelStudio(url)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its autoreloader child
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
