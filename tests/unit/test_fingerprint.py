"""The config fingerprint: what changes it (model files, prompts, generation, pixels), what does not (speed
settings), per task; and how a run judges results made with another config (`output.on_config_change`)."""

import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from internvl_batch.config_loader import load_config
from internvl_batch.done_keys import DoneRule, build_result_keys, text_hashes
from internvl_batch.errors import ConfigChanged
from internvl_batch.fingerprint import changed_settings, check_config_change, done_rule, run_fingerprint
from internvl_batch.keys import key_hashes
from internvl_batch.manifest.scan import ScanTotals, UnitScan


def config(model_dir, **sections):
    base = {"input": {"manifests": "m.jsonl"}, "output": {"path": "out"}, "model": {"path": str(model_dir)}}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_config(None, base=base)


@pytest.fixture(scope="module")
def base_fingerprint(tiny_checkpoint):
    return run_fingerprint(config(tiny_checkpoint), tiny_checkpoint, "system")


@pytest.mark.parametrize(
    ("sections", "changed", "kept"),
    [
        ({"task": {"prompts": {"caption": "Describe it in five words."}}}, {"caption"}, {"ocr", "vqa"}),
        ({"task": {"max_new_tokens": {"ocr": 99}}}, {"ocr"}, {"caption"}),
        ({"generation": {"max_new_tokens": 64}}, {"caption", "ocr", "vqa"}, set()),
        ({"generation": {"do_sample": True}}, {"caption", "vqa"}, set()),
        ({"preprocess": {"max_num": 6}}, {"caption", "ocr"}, set()),
        ({"preprocess": {"exif_transpose": False}}, {"caption"}, set()),
        ({"video": {"num_segments": 4}}, {"vqa"}, set()),
        ({"video": {"decoder": "decord"}}, {"caption", "vqa"}, set()),
        ({"video": {"decoder": "pyav"}}, set(), {"caption", "vqa"}),  # what `auto` is
        ({"model": {"dtype": "float32"}}, {"caption"}, set()),
        # Speed only: no answer changes.
        ({"resources": {"gpu_batch_size": 3, "cpu_actors": 2}}, set(), {"caption", "ocr", "vqa"}),
        ({"batching": {"max_batch_rows": 4}, "generation": {"engine": "generate"}}, set(), {"caption", "ocr"}),
    ],
)
def test_what_changes_a_tasks_fingerprint(tiny_checkpoint, base_fingerprint, sections, changed, kept):
    other = run_fingerprint(config(tiny_checkpoint, **sections), tiny_checkpoint, "system")
    assert {t for t in changed if other.tasks[t] != base_fingerprint.tasks[t]} == changed
    assert {t for t in kept if other.tasks[t] == base_fingerprint.tasks[t]} == kept


def test_other_weights_or_system_message_change_every_task(tiny_checkpoint, tmp_path, base_fingerprint):
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "copy")
    same = run_fingerprint(config(copy), copy, "system")
    assert same.tasks == base_fingerprint.tasks  # a copy elsewhere is the same model
    weights = sorted(copy.glob("*.safetensors"))[0]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # a fine-tune of the same shapes differs in the tensors' bytes
    weights.write_bytes(bytes(data))
    tuned = run_fingerprint(config(copy), copy, "system")
    assert all(tuned.tasks[t] != base_fingerprint.tasks[t] for t in base_fingerprint.tasks)
    assert changed_settings(
        frozenset(text_hashes([base_fingerprint.tasks["caption"]]).tolist()),
        tuned,
        [{"config_fingerprint": base_fingerprint.record()}],
    ) == ["model.files"]
    other_system = run_fingerprint(config(tiny_checkpoint), tiny_checkpoint, "another system message")
    assert other_system.tasks["ocr"] != base_fingerprint.tasks["ocr"]


def test_a_setting_added_later_keeps_earlier_fingerprints_at_its_default(tiny_checkpoint, base_fingerprint):
    """`video.decoder` joined the fingerprint after outputs carried one: at PyAV (what `auto` is) the hashes are
    those of a run that never recorded it, and an earlier record without the part does not name it as changed."""
    assert base_fingerprint.parts["video.decoder"] == "pyav"
    earlier = {name: value for name, value in base_fingerprint.parts.items() if name != "video.decoder"}
    new = config(tiny_checkpoint, task={"prompts": {"caption": "Describe it in five words."}})
    fingerprint = run_fingerprint(new, tiny_checkpoint, "system")
    record = {"config_fingerprint": {"tasks": base_fingerprint.tasks, "parts": earlier}}
    stale = frozenset(text_hashes([base_fingerprint.tasks["caption"]]).tolist())
    assert changed_settings(stale, fingerprint, [record]) == ["task.caption.prompt"]
    decord = run_fingerprint(config(tiny_checkpoint, video={"decoder": "decord"}), tiny_checkpoint, "system")
    assert changed_settings(stale, decord, [record]) == ["video.decoder"]


def scan_with(stale_keys, stale):
    return SimpleNamespace(
        totals=ScanTotals(stale_keys=stale_keys), units=[UnitScan(0, "m", 1, 0, 0, {}, stale_configs=frozenset(stale))]
    )


def test_a_config_change_stops_the_run_naming_the_settings_unless_told(tiny_checkpoint, base_fingerprint):
    new = config(tiny_checkpoint, task={"prompts": {"caption": "Describe it in five words."}})
    fingerprint = run_fingerprint(new, tiny_checkpoint, "system")
    records = [{"run_id": "r1", "config_fingerprint": base_fingerprint.record()}]
    old = int(text_hashes([base_fingerprint.tasks["caption"]])[0])
    with pytest.raises(ConfigChanged, match=r"3 results .* \(changed: task.caption.prompt\); set output.on_config"):
        check_config_change(new, scan_with(3, {old}), fingerprint, records)
    with pytest.raises(ConfigChanged, match="unrecorded: results written before fingerprints"):
        check_config_change(new, scan_with(1, {0}), fingerprint, [])
    assert check_config_change(new, scan_with(0, set()), fingerprint, records) == frozenset()
    keep = config(tiny_checkpoint, output={"on_config_change": "keep"})
    assert check_config_change(keep, scan_with(3, {old}), fingerprint, records) == {old}


def test_the_rule_per_choice(tiny_checkpoint, base_fingerprint):
    """One result per choice: made with this config, with an older one, with one a keep run accepted."""
    keys = key_hashes(["same", "older", "accepted", "failed"], ["caption"] * 4)
    fingerprints = [base_fingerprint.tasks["caption"], "f-older", "f-accepted", base_fingerprint.tasks["caption"]]
    state = np.zeros((4, 4), np.uint64)
    state[:, 1], state[:, 2] = text_hashes(fingerprints), [1, 1, 1, 0]
    rows = [np.concatenate([keys, state], axis=1)]
    records = [{"accepted_fingerprints": [int(text_hashes(["f-accepted"])[0])]}]

    def verdict(choice, retry=False):
        rule = done_rule(
            config(tiny_checkpoint, output={"on_config_change": choice, "retry_errors": retry}),
            base_fingerprint,
            records,
        )
        judged = build_result_keys(rows, [], rule).judge(keys, np.zeros(4, np.uint64), ["caption"] * 4)
        return judged.done.tolist(), judged.stale.tolist()

    assert verdict("error") == ([True, False, True, True], [False, True, False, False])
    assert verdict("keep") == ([True, True, True, True], [False, True, False, False])
    assert verdict("reprocess") == ([True, False, False, True], [False, True, True, False])
    assert verdict("error", retry=True)[0] == [True, False, True, False]
    assert DoneRule().fingerprint_ok(["caption"], np.zeros(1, np.uint64)).tolist() == [False]  # no fingerprint
