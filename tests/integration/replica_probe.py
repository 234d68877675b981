"""A Ray worker setup hook for tests (`runtime_env={"worker_process_setup_hook": ...}`): records where each
model replica runs, and injects accelerator faults with the real exception class where no GPU can raise one.

Driven by environment variables of the test's Ray cluster:
- REPLICA_PROBE_DIR: each Predictor built writes `replica-<pid>.json` there (its device, what Ray reserved,
  CUDA_VISIBLE_DEVICES and the allocator settings of its process);
- `<REPLICA_PROBE_DIR>/inject-faults` (a number, written by the test): that many micro-batches, over the whole
  cluster, raise torch.AcceleratorError as an illegal memory access would; `fault-<n>` files count them;
- `<REPLICA_PROBE_DIR>/poison` (lines `<text> segv|accelerator`, written by the test): a micro-batch with a row
  whose prompt contains <text> kills its replica's process every time, with a real SIGSEGV or an
  AcceleratorError (which the stage answers by exiting the process); `crash-<text>-<pid>` files record each;
- `<REPLICA_PROBE_DIR>/die-on-load` (written by the test): every replica's process is killed with SIGKILL (as
  the kernel's out-of-memory killer does) while it loads the model; `load-death-<pid>` files record each.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path


def install() -> None:
    probe_dir = os.environ.get("REPLICA_PROBE_DIR")
    if not probe_dir:
        return
    from internvl_batch.generation.predictor import Predictor

    directory = Path(probe_dir)
    # Faults are raised where both engines build a micro-batch's (or prefill group's) prompt embeddings:
    # inside the region in which the model stage records the rows as in flight.
    init, embeddings = Predictor.__init__, Predictor._prompt_embeddings

    def recording_init(self, *args, **kwargs):
        if (directory / "die-on-load").exists():
            (directory / f"load-death-{os.getpid()}").write_text("")
            os.kill(os.getpid(), signal.SIGKILL)
        init(self, *args, **kwargs)
        record = {
            "pid": os.getpid(),
            "device": str(self.device),
            "reserved_gpus": kwargs.get("reserved_gpus"),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
        }
        (directory / f"replica-{os.getpid()}.json").write_text(json.dumps(record))

    def faulty_embeddings(self, requests, left):
        import torch

        poison = directory / "poison"
        for line in poison.read_text().splitlines() if poison.exists() else []:
            text, how = line.rsplit(" ", 1)
            if any(text in self.tokenizer.decode(r.input_ids.tolist()) for r in requests):
                (directory / f"crash-{text}-{os.getpid()}").write_text(str(len(requests)))
                if how == "segv":
                    os.kill(os.getpid(), signal.SIGSEGV)
                raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

        wanted = directory / "inject-faults"
        for n in range(int(wanted.read_text()) if wanted.exists() else 0):
            try:
                with open(directory / f"fault-{n}", "x") as f:  # exclusive create: each fault is injected once
                    f.write(str(os.getpid()))
            except FileExistsError:
                continue
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        return embeddings(self, requests, left)

    Predictor.__init__ = recording_init
    Predictor._prompt_embeddings = faulty_embeddings
