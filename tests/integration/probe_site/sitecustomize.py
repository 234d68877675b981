"""Started by every Python process whose PYTHONPATH holds this folder (the Ray cluster of
`test_replica_faults.py`): with REPLICA_PROBE_DIR set, `replica_probe.install` runs in a process right after it
imports the model's Predictor. The same as a Ray `worker_process_setup_hook`, which would make every worker
start about twice as slowly (each restarted replica is a new worker)."""

import os
import sys

if os.environ.get("REPLICA_PROBE_DIR"):
    import importlib.abc
    import importlib.machinery

    class _AfterPredictorImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "internvl_batch.generation.predictor":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            exec_module = spec.loader.exec_module

            def exec_then_install(module):
                exec_module(module)
                from tests.integration.replica_probe import install

                install()

            spec.loader.exec_module = exec_then_install
            return spec

    sys.meta_path.insert(0, _AfterPredictorImport())
