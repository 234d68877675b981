"""Result keys: stable 128-bit hashes, a sorted set answering batches, and order-free checksums."""

import json
import subprocess
import sys

import numpy as np

from internvl_batch.config_loader import load_config
from internvl_batch.keys import KeySet, add_checksums, key_checksum, key_hashes
from internvl_batch.manifest.local import read_manifests
from tests.helpers import result_keys


def test_hashes_are_stable_across_processes():
    here = key_hashes(["a", "b"], ["caption", "ocr"])
    code = "from internvl_batch.keys import key_hashes; print(key_hashes(['a', 'b'], ['caption', 'ocr']).tolist())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(other) == here.tolist()
    assert here.dtype == np.uint64 and here.shape == (2, 2)
    # The separator keeps ("a", "bc") and ("ab", "c") apart.
    assert not (key_hashes(["a"], ["bc"]) == key_hashes(["ab"], ["c"])).all()


def test_keyset_membership_and_shared_high_halves():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, (1000, 2), dtype=np.uint64)
    keys[10, 0] = keys[11, 0] = keys[12, 0]  # three keys share their high half: the low half decides
    keyset = KeySet.build([keys[:500], keys[400:800], keys[:10]])
    assert len(keyset) == 800
    mask = keyset.contains(keys)
    assert mask[:800].all() and not mask[800:].any()
    probe = keys[10:13].copy()
    probe[:, 1] += np.uint64(1)
    assert not keyset.contains(probe).any()
    assert not KeySet.build([]).contains(keys).any()


def test_checksums_are_order_free_and_wrap():
    hashes = key_hashes([f"id{i}" for i in range(100)], ["caption"] * 100)
    whole = key_checksum(hashes)
    parts = add_checksums(key_checksum(hashes[:37]), key_checksum(hashes[37:][::-1]))
    assert whole == parts and all(0 <= v < 2**64 for v in whole)
    assert key_checksum(hashes[1:]) != whole


def test_done_keys_skip_only_their_task(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id": "a", "image": "a.jpg"}\n{"id": "b", "image": "b.jpg"}\n')
    config = load_config(
        None,
        base={
            "input": {"manifests": str(tmp_path / "m.jsonl")},
            "output": {"path": "unused"},
            "model": {"path": "tiny"},
            "task": {"tasks": ["caption", "ocr"]},
        },
    )
    done = result_keys(key_hashes(["a", "a", "b"], ["caption", "ocr", "ocr"]))
    table, totals, _ = read_manifests(config, done_keys=done)
    assert table.select(["id", "tasks"]).to_pylist() == [{"id": "b", "tasks": ["caption"]}]
    assert (totals.keys, totals.done_keys, totals.todo_keys) == (4, 3, 1)
    assert totals.todo_checksum == key_checksum(key_hashes(["b"], ["caption"]))
