"""A micro-batch that runs out of memory is split and retried; a row that does not fit alone becomes an error.

The out-of-memory errors are real: the predictor runs in a child process whose address space is capped
(RLIMIT_AS) above what one row needs and below what a batch needs (eager attention materialises
batch x heads x tokens^2 scores).
"""

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {root!r})
    from internvl_batch.config import BatchingConfig, GenerationConfig, ModelConfig
    from internvl_batch.generation.predictor import GenerationRequest, Predictor
    from internvl_batch.imaging import ImagePreprocessor
    from tests.media import encode, make_photo

    p = Predictor(ModelConfig(path={ckpt!r}, attn_implementation="eager"), GenerationConfig(max_new_tokens=2),
                  BatchingConfig(max_batch_rows=8, max_batch_tiles=1000, max_batch_tokens=10**6))
    pre = ImagePreprocessor()
    image = pre(encode(make_photo(800, 600), "PNG"))
    rows = [GenerationRequest(p.prompts.build(f"Question {{i}}?", [13]).input_ids, image.tiles) for i in range(4)]
    big = np.concatenate([image.tiles] * 3)
    rows.append(GenerationRequest(p.prompts.build("All of them?", [13, 13, 13], kind="images").input_ids, big))
    alone = [p.generate([r])[0].output_ids for r in rows[:4]]

    def vm_kb():
        return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize:")))

    cap = (vm_kb() + {headroom_mb} * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    results = p.generate(rows)
    print(json.dumps({{"alone": alone, "batched": [r.output_ids for r in results], "errors": [r.error for r in results]}}))
""")


def test_out_of_memory_splits_then_isolates(tiny_checkpoint):
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[3])
    code = CHILD.format(root=root, ckpt=str(tiny_checkpoint), headroom_mb=700)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"][:4] == [None] * 4, (out["errors"], proc.stderr[-3000:])
    assert out["batched"][:4] == out["alone"]  # the split batch gives the same tokens as rows alone
    assert out["errors"][4].startswith("generate: OutOfMemoryError: a row of ") and "39 tiles" in out["errors"][4]
