"""Whose fault a failed micro-batch is (`generation/faults.py`), with the real exception classes injected where
the hardware that raises them is missing: an accelerator fault ends the replica's process, a bug in our code
fails the batch (never error rows), out of memory lowers the replica's budget so that it is not hit again."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from internvl_batch.config import BatchingConfig, GenerationConfig, ModelConfig
from internvl_batch.config_loader import load_config
from internvl_batch.generation.faults import REPLICA_FAULT_EXIT_CODE, is_out_of_memory, is_replica_fault
from internvl_batch.generation.predictor import GenerationRequest, Predictor
from internvl_batch.imaging import ImagePreprocessor
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


def classify(exc: BaseException) -> str:
    out_of_memory, replica = is_out_of_memory(exc), is_replica_fault(exc)
    assert not (out_of_memory and replica)
    return "out of memory" if out_of_memory else "replica" if replica else "bug"


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
    ],
)
def test_classification(exc, kind):
    assert classify(exc) == kind


def test_the_table_has_the_cpu_allocators_own_message():
    with pytest.raises(RuntimeError) as raised:
        torch.empty(2**62, dtype=torch.uint8)  # beyond any address space: the allocator refuses at once

    def words(message):  # the allocator's words, without the source line and the size
        return message.partition("DefaultCPUAllocator")[2].partition("you tried")[0]

    assert words(str(raised.value)) == words(CPU_ALLOCATOR) == ": can't allocate memory: "
    assert classify(raised.value) == "out of memory"


def _stage_and_batch(tiny_checkpoint, media_dir: Path):
    from internvl_batch.stages.generate import GenerateStage
    from internvl_batch.stages.prepare import PrepareStage
    from tests.unit.stages.test_stages import request_table

    (media_dir / "photo.jpg").write_bytes(encode(make_photo(640, 480), "JPEG"))
    config = load_config(
        None,
        base={
            "input": {"manifests": "m.jsonl"},
            "output": {"path": str(media_dir / "out")},
            "model": {"path": str(tiny_checkpoint)},
            "generation": {"max_new_tokens": 3},
        },
    )
    raw = [{"id": f"r{i}", "image": "photo.jpg", "question": f"Question {i}?"} for i in range(3)]
    table = request_table(raw, str(media_dir / "m.jsonl"), config)
    prepared = next(iter(PrepareStage.from_config(config)(table)))
    return GenerateStage.from_config(config, "tiny"), prepared


def test_a_bug_fails_the_batch_instead_of_writing_error_rows(tiny_checkpoint, tmp_path):
    stage, prepared = _stage_and_batch(tiny_checkpoint, tmp_path)
    assert set(stage(prepared).column("status").to_pylist()) == {"ok"}

    def broken_generate(**kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    stage.predictor.model.generate = broken_generate
    with pytest.raises(TypeError, match="unsupported operand"):
        stage(prepared)


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    import torch
    from tests.unit.generation.test_faults import ILLEGAL_ACCESS, _stage_and_batch

    stage, prepared = _stage_and_batch(Path({ckpt!r}), Path({media!r}))
    print("before", stage(prepared).column("status").to_pylist(), flush=True)

    def poisoned_generate(**kwargs):
        raise torch.AcceleratorError(ILLEGAL_ACCESS)

    stage.predictor.model.generate = poisoned_generate
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
    """The model's generate, raising the real CUDA out-of-memory error above a number of prefill positions
    (rows x padded length), as a GPU of that capacity would."""

    def __init__(self, generate, positions: int):
        self.generate, self.positions, self.raised = generate, positions, 0

    def __call__(self, **kwargs):
        rows, width = kwargs["inputs_embeds"].shape[:2]
        if rows * width > self.positions:
            self.raised += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows * width} positions")
        return self.generate(**kwargs)


def test_out_of_memory_lowers_the_replica_budget(tiny_checkpoint, caplog):
    predictor = Predictor(
        ModelConfig(path=str(tiny_checkpoint)),
        GenerationConfig(max_new_tokens=2),
        BatchingConfig(max_batch_rows=8, max_batch_tokens=10**6),
    )
    rows = _photo_requests(predictor, 8)
    width = len(rows[0].input_ids)
    alone = [predictor.generate([r])[0].output_ids for r in rows]
    capacity = MemoryCapacity(predictor.model.generate, positions=3 * width)  # 3 rows fit, 4 do not
    predictor.model.generate = capacity
    with caplog.at_level("WARNING"):
        first = predictor.generate(rows)
    assert [r.output_ids for r in first] == alone and not any(r.error for r in first)
    assert capacity.raised >= 1 and predictor.learned_max_tokens is not None
    assert "planning this replica's micro-batches at" in caplog.text
    raised = capacity.raised
    second = predictor.generate(rows)  # the same rows again: planned within the learned budget
    assert [r.output_ids for r in second] == alone
    assert capacity.raised == raised, "the replica ran out of memory again on a micro-batch like the first"


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
