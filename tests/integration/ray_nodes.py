"""Ray nodes that a test starts and stops itself, by process, never with `ray stop` (which stops every Ray
process of the user on the machine, other people's work included).

Each node runs `ray start --block` in its own process group with its own temp dir. Stopping signals that
group, then any process left whose command line names the node's temp dir (raylet, GCS, workers: all are
started with paths under it), so only what the test started is touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def processes_under(path: str) -> list[int]:
    """Process ids whose command line mentions `path` (this test's temp dir), the caller excluded."""
    needle = path.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def descendants(pid: int) -> set[int]:
    """Process ids started, directly or not, by process `pid` (a local Ray's raylet and its workers are
    descendants of the test process that called `ray.init`)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_processes_under(path: str, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, every process started with paths under `path`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_under(path)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)]
            time.sleep(0.2)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def short_temp_dir(prefix: str) -> str:
    # Short: Ray's unix sockets live under it and have a path length limit.
    return tempfile.mkdtemp(prefix=f"/tmp/{prefix}-")


# Ports that every Ray node would otherwise take at their fixed defaults (52365 for the dashboard agent, ...):
# two nodes on one machine, or a node and another test process's local cluster, must not share them.
AGENT_PORTS = (
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--node-manager-port",
    "--object-manager-port",
)


def own_ports(args: list[str]) -> list[str]:
    """A free port for each of `AGENT_PORTS` that `args` does not set."""
    from tests.integration.conftest import free_port

    return [f"{flag}={free_port()}" for flag in AGENT_PORTS if not any(a.startswith(flag) for a in args)]


class RayNode:
    """`ray start --block` with the given arguments, its own temp dir and environment."""

    def __init__(self, args: list[str], env: dict, name: str) -> None:
        self.temp_dir = short_temp_dir(name)
        self.log_path = Path(self.temp_dir) / "ray-start.log"
        command = [
            str(BIN / "ray"),
            "start",
            "--block",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            *own_ports(args),
            *args,
        ]
        self.process = subprocess.Popen(
            command, env=env, start_new_session=True, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            # `ray start --block` does not always exit on SIGTERM (a head with the dashboard still ran 15 s later;
            # a worker node's exits in under a second): no longer wait for it, what is left is killed below
            self.process.wait(timeout=1)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_processes_under(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def wait_for_nodes(address: str, count: int, env: dict, timeout_s: float = 180) -> None:
    """Block until `count` nodes are alive in the cluster at `address` (checked from a separate process)."""
    code = (
        "import sys, time, ray\n"
        f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False)\n"
        f"deadline = time.monotonic() + {timeout_s}\n"
        f"while sum(n['Alive'] for n in ray.nodes()) < {count}:\n"
        "    if time.monotonic() > deadline: sys.exit(1)\n"
        "    time.sleep(0.5)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout_s + 60)
    if proc.returncode:
        raise RuntimeError(f"the Ray cluster at {address} did not reach {count} nodes: {proc.stderr[-2000:]}")
