"""Model replicas on a Ray cluster whose node declares GPUs (this machine has none, so the replicas still
compute on the CPU): a replica uses exactly the GPUs Ray reserved for it, and an accelerator fault restarts
the replica and retries its batch instead of marking rows as failed. Faults are injected with the real
exception class by `replica_probe.py`, installed in the cluster's workers by `probe_site/sitecustomize.py`."""

import json
import os
import secrets
from pathlib import Path

import pytest

from internvl_batch.config_loader import load_config
from internvl_batch.output_dir import read_summary
from internvl_batch.results import read_results
from tests.integration.conftest import init_ray_with_env, stop_shared_ray
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SITE = Path(__file__).resolve().parent / "probe_site"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """A local Ray cluster whose node declares 2 GPUs, its workers set up by `replica_probe.install`."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    import ray

    stop_shared_ray()  # this module's cluster declares GPUs and sets up its workers: its own
    directory = tmp_path_factory.mktemp("probe")
    # Inherited by the cluster's processes only (restored right after): its workers install the probe
    # (probe_site/sitecustomize.py; a runtime_env setup hook would make every worker start twice as slowly).
    probe_env = {
        "REPLICA_PROBE_DIR": str(directory),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SITE), str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    init_ray_with_env(probe_env, address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield directory
    ray.shutdown()


def _job(tmp_path: Path, accelerator: str, rows: int = 6, questions: dict | None = None, overrides=()):
    """A job of `rows` photos on the tiny checkpoint; `overrides`: `--set` style, e.g. "resources.x=3"."""
    for i in range(rows):
        (tmp_path / f"{i}.jpg").write_bytes(encode(make_photo(64, 64, seed=i), "JPEG"))  # one tile: quick
    manifest = [{"id": f"img{i}", "image": f"{i}.jpg"} for i in range(rows)]
    for i, question in (questions or {}).items():
        manifest[i]["question"] = question
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(row) for row in manifest))
    return load_config(
        None,
        list(overrides),
        base={
            "input": {"manifests": str(tmp_path / "m.jsonl")},
            "output": {"path": str(tmp_path / "out"), "rows_per_file": 2},
            "model": {"path": "tiny", "cache_dir": str(tmp_path / "cache")},
            "generation": {"max_new_tokens": 3},
            "resources": {
                "accelerator": accelerator,
                "cpu_actors": 1,
                "gpu_replicas": 1,
                "gpu_batch_size": 2,
                "rows_per_block": 2,
            },
        },
    )


def _replicas(directory: Path) -> list[dict]:
    records = [json.loads(p.read_text()) for p in directory.glob("replica-*.json")]
    for p in directory.glob("replica-*.json"):
        p.unlink()
    return records


def test_a_row_that_kills_every_replica_becomes_an_error_row_and_the_job_says_so(probe, tmp_path):
    """Two rows kill the replica that generates them, every time: one with a real SIGSEGV, one with a
    deterministic accelerator fault. Each is tried in its micro-batch, then once alone, then given up; the
    rows batched with them are answered (the replica restarted, their batch retried: a fault marks no row as
    failed by itself); the job finishes with exit code 3 and says why. The replicas' placement is checked on
    the same run."""
    from internvl_batch.job import main

    (probe / "poison").write_text("POISONSEGV segv\nPOISONACCEL accelerator\n")
    questions = {2: "POISONSEGV what is this?", 4: "POISONACCEL what is this?", 3: "What is this?"}
    config = _job(tmp_path, "cpu", questions=questions, overrides=["output.max_error_fraction=0.5"])
    try:
        code = main(config=config)
    finally:
        (probe / "poison").unlink()
    crashed = {p: p.read_text() for p in probe.glob("crash-*")}  # crash-<text>-<pid>: the micro-batch's size
    crashes = sorted(p.name.rsplit("-", 1)[0] for p in crashed)
    assert (
        crashes == ["crash-POISONACCEL"] * 2 + ["crash-POISONSEGV"] * 2
    )  # in a micro-batch, then alone: not a third time
    assert sorted(crashed.values()) == ["1", "1", "2", "2"]  # each first with the row batched with it
    replicas = _replicas(probe)
    # Each crashed replica's process was replaced by a new one (Ray restarted the actor).
    assert {int(p.name.rsplit("-", 1)[1]) for p in crashed} <= {r["pid"] for r in replicas}
    assert len(replicas) > len(crashed)
    results = read_results(str(tmp_path / "out"))
    rows = dict(zip(results.column("id").to_pylist(), results.to_pylist()))
    assert sorted(rows) == [f"img{i}" for i in range(6)]
    assert {i: r["status"] for i, r in rows.items() if r["status"] != "ok"} == {"img2": "error", "img4": "error"}
    for bad in ("img2", "img4"):
        assert rows[bad]["error"].startswith(
            "generate: ReplicaCrashed: a model replica's process died while generating this row, 2 times"
        )
    summary = read_summary(tmp_path / "out")
    assert code == 3 and summary["status"] == "ok_with_crashed_rows"
    assert (summary["replica_crashes"], summary["rows_crashed"]) == (len(crashes), 2)
    assert summary["errors_by_type"] == {"generate: ReplicaCrashed": 2}
    # Placement: with resources.accelerator=cpu the replicas reserved no GPU of this node's two, and Ray leaves
    # CUDA_VISIBLE_DEVICES unset for such actors: they would see (and could allocate on) both.
    assert all(r["reserved_gpus"] == 0 and r["CUDA_VISIBLE_DEVICES"] == "" and r["device"] == "cpu" for r in replicas)
    assert all(r["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True" for r in replicas)
    for crash in crashed:
        crash.unlink()


@pytest.mark.timeout(240)  # without the bound the job never ends: fail, do not stall the suite
def test_a_replica_that_dies_while_loading_ends_the_job(probe, tmp_path, capsys):
    """A replica's process killed (SIGKILL, as by the out-of-memory killer) every time it loads the model is
    restarted by Ray; at resources.max_replica_load_deaths it refuses to load again and the job ends with one
    line saying why, instead of restarting the replica for ever."""
    from internvl_batch.job import main

    (probe / "die-on-load").write_text("")
    config = _job(tmp_path, "cpu", overrides=["resources.max_replica_load_deaths=2"])
    try:
        code = main(config=config)
    finally:
        (probe / "die-on-load").unlink()
    deaths = list(probe.glob("load-death-*"))
    for death in deaths:
        death.unlink()
    assert code == 1 and len(deaths) == 2  # killed twice while loading, not restarted a third time
    assert (
        "ModelLoadError: a model replica's process died 2 times while loading the model (is the node's memory "
        "large enough for it? see the replica's worker log); not started again "
        "(resources.max_replica_load_deaths=2)"
    ) in capsys.readouterr().err.splitlines()[-1]
