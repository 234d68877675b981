"""Rows that kill model replicas (`generation/crashes.py`): the ledger's records, and the model stage reading
them. A replica that dies leaves its micro-batch's rows recorded as in flight; here that record is made the
way a dying replica leaves it (begun, never ended), and the stage, with a real model, then answers the batch
Ray would retry. The deaths themselves (a real segfault, a real accelerator fault in a Ray actor) are in
`tests/integration/test_replica_faults.py`."""

import pytest

from internvl_batch.errors import ModelLoadError
from internvl_batch.generation.crashes import CrashLedger, model_load_guard, row_keys, triage
from tests.helpers import job_config, prepare_rows
from tests.media import encode, make_photo


def test_a_finished_attempt_leaves_nothing_and_an_unfinished_one_counts_as_a_crash():
    ledger = CrashLedger()
    keys = row_keys(["a", "b", "c"], ["caption", "caption", "ocr"])
    assert keys == ["a\tcaption", "b\tcaption", "c\tocr"]
    ledger.begin("1", keys[:2])
    ledger.end("1")
    assert ledger.crashes(keys) == {} and ledger.stats() == {"replica_crashes": 0, "rows_in_flight_or_crashed": 0}

    ledger.begin("2", keys)  # the replica died with these rows in flight
    assert ledger.crashes(keys) == {k: 1 for k in keys}
    ledger.begin("3", keys[1:2])  # b alone, and the replica died again
    ledger.begin("4", keys[2:3])  # c alone: done
    ledger.end("4")
    assert ledger.crashes(keys) == {"a\tcaption": 1, "b\tcaption": 2}
    assert ledger.stats()["replica_crashes"] == 2  # attempts 2 and 3
    ledger.begin("5", keys[:1])
    ledger.end("5")  # a done: its record goes
    assert ledger.crashes(keys) == {"b\tcaption": 2}
    assert ledger.stats() == {"replica_crashes": 2, "rows_in_flight_or_crashed": 1}


def test_triage():
    keys = ["a", "b", "c", "d"]
    plan = triage([0, 3, 5, 9], keys, {"b": 1, "c": 2, "d": 3}, limit=2)
    assert (plan.batched, plan.alone, sorted(plan.given_up)) == ([0], [3], [5, 9])
    assert plan.given_up[5] == (
        "generate: ReplicaCrashed: a model replica's process died while generating this row, 2 times (the last "
        "time with no other row); not tried again (resources.max_crashes_per_row=2)"
    )


class RecordingLedger(CrashLedger):
    """The real ledger, also keeping the rows of each attempt begun (what the replica ran together)."""

    def __init__(self):
        super().__init__()
        self.attempts = []

    def begin(self, attempt, keys):
        self.attempts.append(sorted(keys))
        super().begin(attempt, keys)


@pytest.fixture(scope="module")
def stage_and_batch(tiny_checkpoint, tmp_path_factory):
    from internvl_batch.stages.generate import GenerateStage

    media = tmp_path_factory.mktemp("crash-media")
    (media / "photo.jpg").write_bytes(encode(make_photo(640, 480), "JPEG"))
    config = job_config(tiny_checkpoint, media / "out", generation={"max_new_tokens": 4})
    raw = [{"id": f"r{i}", "image": "photo.jpg", "question": f"Question {i}?"} for i in range(4)]
    prepared = prepare_rows(config, raw, str(media / "m.jsonl"))
    stage = GenerateStage.from_config(config, "tiny")
    reference = stage(prepared)  # no ledger: the answers every other path must give
    return stage, prepared, reference


def test_rows_that_were_in_flight_when_a_replica_died_are_generated_alone(stage_and_batch):
    stage, prepared, reference = stage_and_batch
    ledger = RecordingLedger()
    keys = row_keys([f"r{i}" for i in range(4)], ["vqa"] * 4)
    ledger.begin("died", keys[1:3])  # what a replica that died generating r1 and r2 together leaves
    stage.crash_ledger = ledger
    try:
        out = stage(prepared)
    finally:
        stage.crash_ledger = None
    assert ledger.attempts[1:] == [[keys[0], keys[3]], [keys[1]], [keys[2]]]  # the others together, then one by one
    assert out.column("status").to_pylist() == ["ok"] * 4
    assert out.column("response").to_pylist() == reference.column("response").to_pylist()  # the same answers
    assert ledger.crashes(keys) == {}  # every row finished: nothing left in the ledger
    assert ledger.stats()["replica_crashes"] == 1


def test_a_row_at_the_crash_limit_becomes_an_error_row_and_the_rest_are_answered(stage_and_batch):
    stage, prepared, reference = stage_and_batch
    ledger = RecordingLedger()
    keys = row_keys([f"r{i}" for i in range(4)], ["vqa"] * 4)
    ledger.begin("died", keys)  # the batch killed a replica...
    ledger.begin("died-alone", keys[2:3])  # ...and r2 alone killed the next one
    stage.crash_ledger = ledger
    try:
        out = stage(prepared)
    finally:
        stage.crash_ledger = None
    assert keys[2] not in sum(ledger.attempts[2:], [])  # r2 was not tried a third time
    assert out.column("status").to_pylist() == ["ok", "ok", "error", "ok"]
    assert (
        out.column("error")
        .to_pylist()[2]
        .startswith("generate: ReplicaCrashed: a model replica's process died while generating this row, 2 times")
    )
    assert (out.column("error_stage")[2].as_py(), out.column("error_type")[2].as_py()) == ("generate", "ReplicaCrashed")
    expected = reference.column("response").to_pylist()
    assert out.column("response").to_pylist() == expected[:2] + [None] + expected[3:]


def test_a_replica_that_keeps_dying_while_loading_refuses_to_load_again():
    ledger = CrashLedger()
    for _ in range(2):  # a load that never returns (its process died) leaves its record for the next start
        with pytest.raises(SystemExit), model_load_guard(ledger, 2):
            raise SystemExit
    with pytest.raises(ModelLoadError, match=r"died 2 times while loading the model .*max_replica_load_deaths=2"):
        with model_load_guard(ledger, 2):
            pytest.fail("loaded after two deaths")


def test_a_load_that_returns_clears_the_deaths_before_it():
    ledger = CrashLedger()
    with pytest.raises(SystemExit), model_load_guard(ledger, 2):
        raise SystemExit
    with model_load_guard(ledger, 2):  # one death is below the limit: it loads...
        pass
    with model_load_guard(ledger, 2):  # ...and once it has loaded, the earlier death no longer counts
        pass
    assert ledger.crashes([f"load\t{ledger.replica_name()}"]) == {}
    with model_load_guard(None, 1):  # no ledger: no guard
        pass
