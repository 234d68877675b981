"""Whose fault a failed micro-batch is (`generation/faults.py`), with the real exception classes injected where
the hardware that raises them is missing: an accelerator fault ends the replica's process, a bug in our code
or a deterministic cuBLAS/cuDNN/CUDA error fails the batch (never error rows, never a replica restart), out of
memory lowers the replica's budget so that it is not hit again."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from internvl_batch.config import BatchingConfig, GenerationConfig, ModelConfig
from internvl_batch.generation.faults import (
    REPLICA_FAULT_EXIT_CODE,
    describe_deterministic,
    is_deterministic_error,
    is_out_of_memory,
    is_replica_fault,
)
from internvl_batch.generation.predictor import GenerationRequest, Predictor
from internvl_batch.imaging import ImagePreprocessor
from tests.helpers import job_config, prepare_rows
from tests.media import encode, make_photo

ROOT = Path(__file__).resolve().parents[3]
ILLEGAL_ACCESS = (
    "CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be asynchronously "
    "reported at some other API call, so the stacktrace below might be incorrect."
)


CPU_ALLOCATOR = (  # torch's own message, as `torch.empty(2**62, dtype=torch.uint8)` raises it
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 123 bytes. Error code 12 (Cannot allocate memory)"
)


# What torch appends to a CUDA runtime error (c10's CUDA check), which torch >= 2.8 raises as AcceleratorError.
CUDA_CHECK_NOTE = (
    "\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below "
    "might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\nCompile with "
    "`TORCH_USE_CUDA_DSA` to enable device-side assertions.\n"
)
# torch's cuBLAS check (TORCH_CUDABLAS_CHECK) and cuDNN check raise plain RuntimeErrors with these texts.
CUBLAS_ALLOC = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
CUBLAS_NOT_SUPPORTED = (
    "CUDA error: CUBLAS_STATUS_NOT_SUPPORTED when calling `cublasGemmStridedBatchedEx(handle, opa, opb, (int)m, "
    "(int)n, (int)k, (void*)&falpha, a, CUDA_R_16BF, (int)lda, stridea, b, CUDA_R_16BF, (int)ldb, strideb, "
    "(void*)&fbeta, c, CUDA_R_16BF, (int)ldc, stridec, (int)num_batches, compute_type, "
    "CUBLAS_GEMM_DEFAULT_TENSOR_OP)`"
)
CUDNN_NOT_SUPPORTED = (
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input."
)


def cuda_error(status: str) -> torch.AcceleratorError:
    return torch.AcceleratorError(f"CUDA error: {status}{CUDA_CHECK_NOTE}")


def classify(exc: BaseException) -> str:
    kinds = {
        "out of memory": is_out_of_memory(exc),
        "replica": is_replica_fault(exc),
        "deterministic": is_deterministic_error(exc),
    }
    assert sum(kinds.values()) <= 1, kinds
    return next((kind for kind, matched in kinds.items() if matched), "bug")


@pytest.mark.parametrize(
    "exc, kind",
    [
        (torch.AcceleratorError(ILLEGAL_ACCESS), "replica"),
        (RuntimeError("CUDA error: device-side assert triggered"), "replica"),  # torch < 2.8: plain RuntimeErrors
        (RuntimeError("CUDA error: uncorrectable ECC error encountered"), "replica"),
        (RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, ...)`"), "replica"),
        (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), "replica"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),  # split the batch
        # cudaErrorMemoryAllocation outside the caching allocator (a kernel's or a library's workspace): an
        # AcceleratorError, yet about the batch's size, and it leaves the context usable
        (torch.AcceleratorError("CUDA error: out of memory"), "out of memory"),
        (RuntimeError(CPU_ALLOCATOR), "out of memory"),  # the CPU allocator's failure (CPU replicas, host copies)
        (MemoryError(), "out of memory"),
        (TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'"), "bug"),  # our bug: raised
        (ValueError("3 image token positions for 2 tiles x 256 tokens"), "bug"),
        # the libraries could not allocate their handle or workspace: memory too small for the batch
        (RuntimeError(CUBLAS_ALLOC), "out of memory"),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), "out of memory"),
        # the call is impossible for these inputs on this device: a fresh replica fails the same way
        (RuntimeError(CUBLAS_NOT_SUPPORTED), "deterministic"),
        (
            RuntimeError("CUDA error: CUBLAS_STATUS_INVALID_VALUE when calling `cublasGemmEx( handle, ...)`"),
            "deterministic",
        ),
        (RuntimeError(CUDNN_NOT_SUPPORTED), "deterministic"),
        (RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM"), "deterministic"),
        (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED_SHAPE"), "deterministic"),  # cuDNN 9's sub-codes
        (cuda_error("invalid configuration argument"), "deterministic"),
        (cuda_error("invalid argument"), "deterministic"),
        (cuda_error("no kernel image is available for execution on the device"), "deterministic"),
        (cuda_error("operation not supported"), "deterministic"),
        (RuntimeError("CUDA error: invalid configuration argument"), "deterministic"),  # torch < 2.8
        # real faults stay faults, also as AcceleratorError with torch's whole text
        (cuda_error("unspecified launch failure"), "replica"),
        (cuda_error("device-side assert triggered"), "replica"),
        (cuda_error("uncorrectable ECC error encountered"), "replica"),
        (RuntimeError("cuDNN error: CUDNN_STATUS_MAPPING_ERROR"), "replica"),
        (RuntimeError("CUDA error: CUBLAS_STATUS_INTERNAL_ERROR when calling `cublasLtMatmul(...)`"), "replica"),
        (
            RuntimeError(
                "NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1970, unhandled cuda error (run "
                "with NCCL_DEBUG=INFO for details), NCCL version 2.21.5\nncclUnhandledCudaError: Call to CUDA "
                "function failed."
            ),
            "replica",
        ),
    ],
)
def test_classification(exc, kind):
    assert classify(exc) == kind


def test_a_deterministic_error_is_described_by_its_status():
    assert describe_deterministic(RuntimeError(CUDNN_NOT_SUPPORTED)).startswith("CUDNN_STATUS_NOT_SUPPORTED: ")
    assert describe_deterministic(RuntimeError(CUBLAS_NOT_SUPPORTED)).startswith("CUBLAS_STATUS_NOT_SUPPORTED: ")
    line = describe_deterministic(cuda_error("invalid configuration argument"))
    assert line.startswith("CUDA error: invalid configuration argument: ") and "\n" not in line
    assert "not retried on another replica" in line
    for other in (cuda_error("an illegal memory access was encountered"), RuntimeError(CUBLAS_ALLOC), TypeError()):
        assert describe_deterministic(other) == ""


def test_the_table_has_the_cpu_allocators_own_message():
    with pytest.raises(RuntimeError) as raised:
        torch.empty(2**62, dtype=torch.uint8)  # beyond any address space: the allocator refuses at once

    def words(message):  # the allocator's words, without the source line and the size
        return message.partition("DefaultCPUAllocator")[2].partition("you tried")[0]

    assert words(str(raised.value)) == words(CPU_ALLOCATOR) == ": can't allocate memory: "
    assert classify(raised.value) == "out of memory"


def _stage_and_batch(tiny_checkpoint, media_dir: Path):
    from internvl_batch.stages.generate import GenerateStage

    (media_dir / "photo.jpg").write_bytes(encode(make_photo(640, 480), "JPEG"))
    config = job_config(tiny_checkpoint, media_dir / "out", generation={"max_new_tokens": 3})
    raw = [{"id": f"r{i}", "image": "photo.jpg", "question": f"Question {i}?"} for i in range(3)]
    prepared = prepare_rows(config, raw, str(media_dir / "m.jsonl"))
    return GenerateStage.from_config(config, "tiny"), prepared


def inject(predictor, error_for):
    """Make the predictor's model raise `error_for(rows, width)` (when not None) where its engine runs the
    model: each forward pass of the static engine (prefill and decode steps), or transformers' `generate`.
    `rows` x `width` are the prompt embeddings' (or one decode step's) first two dimensions. Returns a
    function that puts the model back."""
    if predictor.engine is not None:
        forward = predictor.engine.slot_model.forward

        def failing_forward(embeds, *args):
            error = error_for(*embeds.shape[:2])
            if error is not None:
                raise error
            return forward(embeds, *args)

        predictor.engine.slot_model.forward = failing_forward
        return lambda: delattr(predictor.engine.slot_model, "forward")
    generate = predictor.model.generate

    def failing_generate(**kwargs):
        error = error_for(*kwargs["inputs_embeds"].shape[:2])
        if error is not None:
            raise error
        return generate(**kwargs)

    predictor.model.generate = failing_generate
    return lambda: delattr(predictor.model, "generate")


def test_a_bug_fails_the_batch_instead_of_writing_error_rows(tiny_checkpoint, tmp_path):
    stage, prepared = _stage_and_batch(tiny_checkpoint, tmp_path)
    assert set(stage(prepared).column("status").to_pylist()) == {"ok"}
    inject(stage.predictor, lambda rows, width: TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'"))
    with pytest.raises(TypeError, match="unsupported operand"):
        stage(prepared)


def test_a_deterministic_error_fails_the_job_without_restarting_the_replica(tiny_checkpoint, tmp_path, monkeypatch):
    import internvl_batch.stages.generate as generate_stage

    def no_exit(exc):  # exit_replica would end pytest's own process
        raise AssertionError(f"the replica exited for a deterministic error: {exc}")

    monkeypatch.setattr(generate_stage, "exit_replica", no_exit)
    stage, prepared = _stage_and_batch(tiny_checkpoint, tmp_path)
    calls = []

    def unsupported(rows, width):
        calls.append(rows)
        return RuntimeError(CUDNN_NOT_SUPPORTED)

    inject(stage.predictor, unsupported)
    with pytest.raises(RuntimeError, match="CUDNN_STATUS_NOT_SUPPORTED"):
        stage(prepared)
    assert len(calls) == 1, "the batch was split or retried as if it had run out of memory"


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    import torch
    from tests.unit.generation.test_faults import ILLEGAL_ACCESS, _stage_and_batch, inject

    stage, prepared = _stage_and_batch(Path({ckpt!r}), Path({media!r}))
    print("before", stage(prepared).column("status").to_pylist(), flush=True)
    inject(stage.predictor, lambda rows, width: torch.AcceleratorError(ILLEGAL_ACCESS))
    out = stage(prepared)
    print("after", out.column("status").to_pylist(), out.column("error").to_pylist(), flush=True)
""")


@pytest.mark.slow
def test_an_accelerator_fault_ends_the_replica_process(tiny_checkpoint, tmp_path):
    code = CHILD.format(root=str(ROOT), ckpt=str(tiny_checkpoint), media=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "before ['ok', 'ok', 'ok']" in proc.stdout, proc.stderr[-3000:]
    assert "after" not in proc.stdout  # no row was marked failed for what the device did
    assert proc.returncode == REPLICA_FAULT_EXIT_CODE, proc.stderr[-3000:]
    assert "accelerator fault, this replica exits so that Ray restarts it" in proc.stderr
    assert "AcceleratorError: CUDA error: an illegal memory access" in proc.stderr


def _photo_requests(predictor, count):
    image = ImagePreprocessor()(encode(make_photo(448, 448), "PNG"))
    return [
        GenerationRequest(predictor.prompts.build(f"Question {i}?", [image.num_tiles]).input_ids, image.tiles)
        for i in range(count)
    ]


class MemoryCapacity:
    """The real CUDA out-of-memory error above a number of prompt positions (rows x padded length) in one
    forward pass, as a GPU of that capacity would raise it (`inject`)."""

    def __init__(self, positions: int):
        self.positions, self.raised = positions, 0

    def __call__(self, rows, width):
        if rows * width > self.positions:
            self.raised += 1
            return torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows * width} positions")
        return None


@pytest.mark.parametrize("engine", ["static", "generate"])
def test_out_of_memory_lowers_the_replica_budget(tiny_checkpoint, caplog, engine):
    predictor = Predictor(
        ModelConfig(path=str(tiny_checkpoint)),
        GenerationConfig(max_new_tokens=2, engine=engine),
        BatchingConfig(max_batch_rows=8, max_batch_tokens=10**6),
    )
    rows = _photo_requests(predictor, 8)
    width = len(rows[0].input_ids)
    alone = [predictor.generate([r])[0].output_ids for r in rows]
    capacity = MemoryCapacity(positions=3 * width)  # 3 rows fit, 4 do not
    inject(predictor, capacity)
    with caplog.at_level("WARNING"):
        first = predictor.generate(rows)
    assert [r.output_ids for r in first] == alone and not any(r.error for r in first)
    assert capacity.raised >= 1 and predictor.learned_max_tokens is not None
    assert "planning this replica's micro-batches at" in caplog.text
    raised = capacity.raised
    second = predictor.generate(rows)  # the same rows again: planned within the learned budget
    assert [r.output_ids for r in second] == alone
    assert capacity.raised == raised, "the replica ran out of memory again on a micro-batch like the first"


@pytest.mark.parametrize("engine", ["static", "generate"])
def test_a_cublas_allocation_failure_splits_the_batch(tiny_checkpoint, engine):
    predictor = Predictor(
        ModelConfig(path=str(tiny_checkpoint)),
        GenerationConfig(max_new_tokens=2, engine=engine),
        BatchingConfig(max_batch_rows=4, max_batch_tokens=10**6),
    )
    rows = _photo_requests(predictor, 4)
    alone = [predictor.generate([r])[0].output_ids for r in rows]
    # cublasCreate cannot allocate its workspace next to more than 2 rows
    inject(predictor, lambda batch, width: RuntimeError(CUBLAS_ALLOC) if batch > 2 else None)
    results = predictor.generate(rows)
    assert [r.output_ids for r in results] == alone and not any(r.error for r in results)
    assert predictor.out_of_memory_splits >= 1


def test_results_are_read_from_the_device_once_per_micro_batch(tiny_checkpoint):
    from torch.overrides import TorchFunctionMode

    class CountToList(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.Tensor.tolist:
                CountToList.calls += 1
            return func(*args, **(kwargs or {}))

    predictor = Predictor(ModelConfig(path=str(tiny_checkpoint)), GenerationConfig(max_new_tokens=2))
    counts = []
    for size in (1, 4):
        rows = _photo_requests(predictor, size)
        CountToList.calls = 0
        with CountToList():
            predictor.generate(rows)
        counts.append(CountToList.calls)
    assert counts[0] == counts[1], f"host reads grow with the rows of a micro-batch: {counts}"
    assert np.all(np.array(counts) >= 1)
