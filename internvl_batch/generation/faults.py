"""Whose fault is a failed micro-batch: the row's, the replica's, or our code's.

- **Out of memory** is about the batch's size: the predictor splits the batch and retries; a row that does
  not fit even alone becomes that row's error (the only error that is provably about one row).
- **A fault of the replica**: an accelerator error (illegal memory access, device-side assert, ECC error,
  a cuBLAS/cuDNN/NCCL failure) leaves the CUDA context broken, so every later batch on this process would
  fail too. The replica process exits at once (`exit_replica`); Ray restarts the actor and retries the batch
  on a fresh context, so no row is marked failed for what the hardware did.
- **Anything else** (a TypeError, a shape mismatch) is a bug in our code: it is raised, and the job fails
  with it, rather than writing a library's worth of error rows that resume would then count as done.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

# The exit status of a replica that stopped itself after an accelerator fault (EX_TEMPFAIL: try again).
REPLICA_FAULT_EXIT_CODE = 75

# What CUDA/ROCm and their libraries put in the messages of errors that poison the context. torch raises most
# of them as `torch.AcceleratorError` (torch >= 2.8), older releases and the libraries as plain RuntimeError.
_ACCELERATOR_FAULT_MARKERS = (
    "CUDA error",
    "CUDA driver error",
    "HIP error",
    "illegal memory access",
    "illegal instruction",
    "misaligned address",
    "device-side assert",
    "unspecified launch failure",
    "uncorrectable ECC error",
    "CUBLAS_STATUS_",
    "CUDNN_STATUS_",
    "cuDNN error",
    "NCCL error",
)


# What out-of-memory errors raised as plain RuntimeError (or AcceleratorError, a subclass) say.
_OUT_OF_MEMORY_MARKERS = (
    "out of memory",  # "CUDA error: out of memory" (an AcceleratorError), "HIP out of memory"
    "can't allocate memory",  # the CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to ..."
    "not enough memory",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Memory too small for the batch: splitting it may help.

    - CUDA's caching allocator: `torch.OutOfMemoryError`;
    - `CUDA error: out of memory` (cudaErrorMemoryAllocation: a kernel launch or a library's workspace outside
      the caching allocator), which torch >= 2.8 raises as `torch.AcceleratorError`: about the batch's size,
      and not sticky (the context stays usable), so out of memory rather than a replica fault;
    - the CPU allocator's failure (`DefaultCPUAllocator: can't allocate memory`, a RuntimeError) and Python's
      MemoryError.
    Checked before `is_replica_fault`, which never calls an out-of-memory error a fault."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _OUT_OF_MEMORY_MARKERS)


def is_replica_fault(exc: BaseException) -> bool:
    """An error of the device or its libraries (not out of memory): the replica's state is no longer usable."""
    import torch

    if is_out_of_memory(exc):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _ACCELERATOR_FAULT_MARKERS)


def exit_replica(exc: BaseException) -> None:
    """End this replica's process after an accelerator fault, so that Ray restarts it and retries the batch.

    `os._exit`, not an exception: an exception would only fail the batch (as error rows or a failed job) and
    leave the broken context in place; `ray.actor.exit_actor()` is an intentional exit that Ray does not
    restart. Never returns."""
    log.critical(
        "accelerator fault, this replica exits so that Ray restarts it and retries the batch: %s: %s",
        type(exc).__name__,
        exc,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(REPLICA_FAULT_EXIT_CODE)
