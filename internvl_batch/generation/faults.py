"""Whose fault is a failed micro-batch: the row's, the replica's, or our code's.

- **Out of memory** is about the batch's size: the predictor splits the batch and retries; a row that does
  not fit even alone becomes that row's error (the only error that is provably about one row).
- **A fault of the replica**: an accelerator error (illegal memory access, device-side assert, ECC error,
  a cuBLAS/cuDNN/NCCL failure) leaves the CUDA context broken, so every later batch on this process would
  fail too. The replica process exits at once (`exit_replica`); Ray restarts the actor and retries the batch
  on a fresh context, so no row is marked failed for what the hardware did.
- **A deterministic error** of the device's libraries (`is_deterministic_error`: cuBLAS/cuDNN "not
  supported" or "bad parameter", a launch configuration too large for a shape, no kernel for this GPU) says
  the call itself is impossible for these inputs on this device. The context stays usable and a fresh replica
  would fail the same way, so it is no replica fault: it is raised and fails the job, naming the status.
- **Anything else** (a TypeError, a shape mismatch) is a bug in our code: it is raised, and the job fails
  with it, rather than writing a library's worth of error rows that resume would then count as done.
"""

from __future__ import annotations

import logging
import os
import re
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
    # the libraries' own allocations (cublasCreate's handle and workspace, cuDNN's scratch space) failed: the
    # same memory shortage, outside the caching allocator, and the context stays usable
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
)

# Statuses no replica could avoid (the call is impossible for these inputs on this device): a restarted replica
# would hit them again on the same batch, and Ray would restart it forever. None is sticky. Prefixes, as cuDNN 9
# adds sub-codes (CUDNN_STATUS_NOT_SUPPORTED_SHAPE). EXECUTION_FAILED, INTERNAL_ERROR and MAPPING_ERROR (a kernel
# or a memory mapping failed on the device) and NCCL errors stay replica faults.
_DETERMINISTIC_MARKERS = (
    "CUBLAS_STATUS_NOT_SUPPORTED",  # no kernel for this dtype/layout/alignment
    "CUBLAS_STATUS_INVALID_VALUE",  # a parameter out of range (a dimension, a leading dimension)
    "CUBLAS_STATUS_ARCH_MISMATCH",  # a feature this GPU's architecture lacks
    "CUDNN_STATUS_NOT_SUPPORTED",
    "CUDNN_STATUS_BAD_PARAM",
    "CUDNN_STATUS_ARCH_MISMATCH",
    # CUDA/HIP runtime statuses, as "CUDA error: <status>" ("error: " keeps them from matching other texts)
    "error: invalid configuration argument",  # cudaErrorInvalidConfiguration: a launch too large for the shape
    "error: invalid argument",  # cudaErrorInvalidValue
    "error: no kernel image is available for execution on the device",  # not built for this GPU's architecture
    "error: operation not supported",  # cudaErrorNotSupported
)
_STATUS = re.compile(r"(?:CUBLAS|CUDNN)_STATUS_[A-Z_]+")


def is_out_of_memory(exc: BaseException) -> bool:
    """Memory too small for the batch: splitting it may help.

    - CUDA's caching allocator: `torch.OutOfMemoryError`;
    - `CUDA error: out of memory` (cudaErrorMemoryAllocation: a kernel launch or a library's workspace outside
      the caching allocator), which torch >= 2.8 raises as `torch.AcceleratorError`: about the batch's size,
      and not sticky (the context stays usable), so out of memory rather than a replica fault;
    - the CPU allocator's failure (`DefaultCPUAllocator: can't allocate memory`, a RuntimeError) and Python's
      MemoryError.
    - cuBLAS/cuDNN failing to allocate their handle or workspace (`CUBLAS_STATUS_ALLOC_FAILED`,
      `CUDNN_STATUS_ALLOC_FAILED`, RuntimeErrors).
    Checked before `is_replica_fault`, which never calls an out-of-memory error a fault."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _OUT_OF_MEMORY_MARKERS)


def is_deterministic_error(exc: BaseException) -> bool:
    """A cuBLAS/cuDNN/CUDA error that says the call is impossible for these inputs on this device (a
    `_DETERMINISTIC_MARKERS` status, not out of memory): retrying it on another replica fails the same way.
    Neither a replica fault nor out of memory; the predictor re-raises it and the job fails with it."""
    if not isinstance(exc, RuntimeError) or is_out_of_memory(exc):
        return False
    text = str(exc)
    return any(marker in text for marker in _DETERMINISTIC_MARKERS)


def describe_deterministic(exc: BaseException) -> str:
    """One line for the user (a log line or `exc.add_note`): the status and why it is not retried; "" for an
    error that `is_deterministic_error` does not accept."""
    if not is_deterministic_error(exc):
        return ""
    text = str(exc)
    status = _STATUS.search(text)
    named = status.group(0) if status else text.strip().splitlines()[0]
    return (
        f"{named}: a deterministic cuBLAS/cuDNN/CUDA error (the call is not possible for these inputs on this "
        "device), not an accelerator fault: not retried on another replica"
    )


def is_replica_fault(exc: BaseException) -> bool:
    """An error of the device or its libraries (neither out of memory nor `is_deterministic_error`): the
    replica's state is no longer usable, so it exits and Ray retries the batch on a fresh one."""
    import torch

    if is_out_of_memory(exc) or is_deterministic_error(exc):
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
