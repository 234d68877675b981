"""Started by every Python process whose PYTHONPATH holds this folder (the shared Ray cluster's, see
tests/integration/conftest.py): in Ray's worker processes, with SOCKET_FENCE_LOG set, the socket fence of
tests/socket_fence.py goes on before anything else runs (Ray's own agents are left alone)."""

import os
import sys

if os.environ.get("SOCKET_FENCE_LOG") and sys.argv and sys.argv[0].endswith("default_worker.py"):
    from tests.socket_fence import install_in_worker

    install_in_worker()
