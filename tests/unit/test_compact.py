"""Compaction (`compact.py`, one process): an output's current rows rewritten as a few large files sorted by id,
the same rows for every reader before, during (every state a kill can leave) and after, and a rerun finishing a
compaction killed midway."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from internvl_batch import compact, results
from internvl_batch.cli import main
from internvl_batch.compact import compact_output
from internvl_batch.compact_plan import PAUSE_ENV
from internvl_batch.config import OutputConfig, StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.output_dir import (
    RESULT_FILE,
    data_path,
    list_output,
    prepare_output,
    read_summary,
    record_run,
    run_record_path,
    write_summary,
)
from internvl_batch.report.collect import collect
from internvl_batch.results import read_results, result_files, write_result_file

LOCAL = StorageConfig()
RUNS = ["20250101T000000000000Z-aaaaaa", "20250102T000000000000Z-bbbbbb", "20250103T000000000000Z-cccccc"]
REPOSITORY = Path(__file__).resolve().parents[2]


def _rows(run: str, rows: list[tuple], **extra) -> pa.Table:
    """Result rows (id, task, status, response, page, num_pages) of `run`, with `extra` columns (name -> value)."""
    columns = {
        "id": pa.array([r[0] for r in rows], pa.string()),
        "task": pa.array([r[1] for r in rows], pa.string()),
        "status": pa.array([r[2] for r in rows], pa.string()),
        "response": pa.array([r[3] for r in rows], pa.string()),
        "page": pa.array([r[4] if len(r) > 4 else None for r in rows], pa.int32()),
        "num_pages": pa.array([r[5] if len(r) > 5 else None for r in rows], pa.int32()),
        "run_id": pa.array([run] * len(rows), pa.string()),
    }
    columns.update({name: pa.array([value] * len(rows), pa.string()) for name, value in extra.items()})
    return pa.table(columns)


def build_output(out: Path) -> Path:
    """Three recorded runs superseding each other: errors retried, a PDF rewritten in the other shape both ways,
    columns that only later runs have, a key written twice by one run (two files) and twice in one file."""
    first, second, third = RUNS
    images = [(f"img{i:03d}", "caption", "error" if i % 3 == 0 else "ok", f"a{i}") for i in range(40)]
    pages = [("docA#p1", "caption", "ok", "pA1", 1, 2), ("docA#p2", "caption", "ok", "pA2", 2, 2)]
    for chunk in range(4):  # ten rows per file, as a job's writers leave them
        write_result_file(_rows(first, images[chunk * 10 : chunk * 10 + 10]), str(out), LOCAL, first)
    write_result_file(_rows(first, [*pages, ("docB", "caption", "error", None)]), str(out), LOCAL, first)
    write_result_file(_rows(first, [(f"img{i:03d}", "ocr", "ok", f"o{i}") for i in range(10)]), str(out), LOCAL, first)
    retried = [(f"img{i:03d}", "caption", "ok", f"b{i}") for i in range(0, 40, 3)]
    write_result_file(_rows(second, retried, source_version="v2"), str(out), LOCAL, second)
    shapes = [("docA", "caption", "error", None), ("docB#p1", "caption", "ok", "pB1", 1, 1)]
    write_result_file(_rows(second, shapes, source_version="v2"), str(out), LOCAL, second)
    extra = {"source_version": "v3", "config_fingerprint": "f3"}
    write_result_file(_rows(third, [("img005", "caption", "ok", "c5"), ("new1", "caption", "ok", "n1")], **extra),
                      str(out), LOCAL, third)  # fmt: skip
    write_result_file(_rows(third, [("img005", "caption", "ok", "c5-again")], **extra), str(out), LOCAL, third)
    write_result_file(_rows(third, [("new2", "ocr", "ok", "first"), ("new2", "ocr", "ok", "second")], **extra),
                      str(out), LOCAL, third)  # fmt: skip
    for run in RUNS:
        record_run(str(out), LOCAL, {"run_id": run, "status": "finished", "rows_processed": 1})
    write_summary(str(out), LOCAL, {"run_id": third, "status": "finished", "rows_processed": 3})
    return out


def row_set(table: pa.Table) -> set:
    """Rows as a set of (column, value) tuples, columns a table lacks counted as null (all columns compared)."""
    return {tuple(sorted((k, v) for k, v in row.items() if v is not None)) for row in table.to_pylist()}


def done_keys(out) -> list:
    """What resume decides from the output (`done_keys.build_result_keys`, or `result_key_hashes` in a tree
    from before it): per key, its hash, and the version, fingerprint and ok flag of its current row."""
    if not hasattr(results, "result_key_rows"):
        from internvl_batch.keys import complete_documents

        found = []
        for ok_only in (False, True):
            plain, paged = results.result_key_hashes(str(out), result_files(str(out), LOCAL), LOCAL, ok_only)
            documents = complete_documents(paged[:, 0:2], paged[:, 2:4], paged[:, 4:6])
            found.append(sorted(map(tuple, np.concatenate([plain, documents]).tolist())))
        return found
    from internvl_batch.done_keys import DoneRule, build_result_keys

    files = results.result_files(str(out), LOCAL)
    plain, paged = results.result_key_rows(str(out), files, LOCAL)
    keys = build_result_keys([plain], [paged], DoneRule())
    state = [keys.keys.high, keys.keys.low, keys.versions, keys.configs, keys.ok]
    return [tuple(int(v) for v in row) for row in zip(*state)]


def new_files(out) -> list[str]:
    """The result files a compaction wrote (named with a run id none of the three runs has)."""
    return [f for f in result_files(str(out), LOCAL) if RESULT_FILE.fullmatch(Path(f).name)[1] not in RUNS]


def test_compaction_keeps_exactly_the_current_rows_in_few_files_sorted_by_id(tmp_path):
    out = build_output(tmp_path / "out")
    before, files_before, keys_before = read_results(str(out)), result_files(str(out), LOCAL), done_keys(out)
    assert before.num_rows == 54  # 40 captions, 10 ocr, docA (one row), docB#p1, new1, new2

    summary = compact_output(str(out), target_rows=20)

    assert row_set(read_results(str(out))) == row_set(before)
    files = result_files(str(out), LOCAL)
    assert summary == {
        "run_id": summary["run_id"],
        "files_before": len(files_before),
        "files_after": len(files),
        "rows_kept": 54,
        "rows_dropped": 14 + 2 + 2 + 1 + 1,  # retried captions, img005 twice, docA's pages, docB, new2's second
    }
    assert 2 <= len(files) <= 4 < len(files_before)
    assert {RESULT_FILE.fullmatch(f.rsplit("/", 1)[-1])[1] for f in files} == {summary["run_id"]}
    ids = [pq.read_table(f, columns=["id"])["id"].to_pylist() for f in files]  # name order
    assert all(chunk == sorted(chunk) for chunk in ids) and sum(ids, []) == sorted(sum(ids, []))
    assert sum(map(len, ids)) == 54  # plain readers: exactly the current rows, every column
    assert row_set(pads.dataset(data_path(str(out))).to_table()) == row_set(before)
    assert done_keys(out) == keys_before and len(keys_before) == 54
    assert not (out / ".internvl-batch" / "compaction.json").exists()
    record = json.loads(Path(run_record_path(str(out), summary["run_id"])).read_text())
    assert record["kind"] == "compact" and record["status"] == "compacted" and record["rows_kept"] == 54
    # The rest of the job reads the output as before: the summary, the report, a resumed run's start.
    assert read_summary(out)["run_id"] == RUNS[2]
    report = collect(str(out), LOCAL)
    assert report.rows == 54 and [r["run_id"] for r in report.runs] == [*RUNS, summary["run_id"]]
    prepare_output(OutputConfig(path=str(out)), LOCAL, run_id=None)
    assert row_set(read_results(str(out))) == row_set(before)

    again = compact_output(str(out), target_rows=20)  # a compacted output compacts to the same rows
    assert again["rows_dropped"] == 0 and row_set(read_results(str(out))) == row_set(before)


def test_every_state_between_old_and_new_files_reads_the_same(tmp_path, monkeypatch):
    """Any subset of the new files next to all old ones (while writing), then the old files removed one by one
    in name order (after the commit): read_results gives the same rows at every step."""
    monkeypatch.setattr(compact, "CHUNK_FILES", 4)  # the old files in 3 chunks, as the Ray tasks get them
    out = build_output(tmp_path / "out")
    before = row_set(read_results(str(out)))
    snapshot = shutil.copytree(out, tmp_path / "snapshot")
    summary = compact_output(str(out), target_rows=10)
    new = new_files(out)
    assert len(new) >= 4
    shutil.copy(run_record_path(str(out), summary["run_id"]), run_record_path(str(snapshot), summary["run_id"]))
    for file in new:  # while writing: the old files and more and more new ones
        shutil.copy(file, snapshot / "data")
        assert row_set(read_results(str(snapshot))) == before
    for file in sorted(set(result_files(str(snapshot), LOCAL)) - {str(snapshot / "data" / Path(f).name) for f in new}):
        os.unlink(file)  # after the commit: old files removed in name order
        assert row_set(read_results(str(snapshot))) == before


def _compaction_killed_at(out: Path, point: str) -> None:
    """Run a compaction in a child process that stops at `point`; kill it there (SIGKILL, by its pid)."""
    code = f"from internvl_batch.compact import compact_output; compact_output({str(out)!r}, target_rows=10)"
    env = {**os.environ, PAUSE_ENV: point, "PYTHONPATH": str(REPOSITORY)}
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout.readline().strip() == f"compaction paused at {point}"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)


@pytest.mark.parametrize("point", ["written", "removing"])
def test_a_compaction_killed_midway_leaves_the_rows_and_a_rerun_finishes_it(tmp_path, point):
    out = build_output(tmp_path / "out")
    before, files_before, keys_before = row_set(read_results(str(out))), result_files(str(out), LOCAL), done_keys(out)
    _compaction_killed_at(out, point)

    plan = json.loads((out / ".internvl-batch" / "compaction.json").read_text())
    assert plan["state"] == {"written": "writing", "removing": "replacing"}[point]
    assert row_set(read_results(str(out))) == before and done_keys(out) == keys_before
    assert len(new_files(out)) == (1 if point == "written" else len(plan["new"]))
    assert list_output(*_fs(out)).foreign == []  # the plan and its run record are the job's own files

    summary = compact_output(str(out), target_rows=10)

    assert summary["run_id"] == plan["run_id"] and summary["files_before"] == len(files_before)
    assert row_set(read_results(str(out))) == before
    assert result_files(str(out), LOCAL) == new_files(out) and len(new_files(out)) == summary["files_after"]
    assert not (out / ".internvl-batch" / "compaction.json").exists()


def _fs(out: Path):
    from internvl_batch.filesystems import fsspec_filesystem

    return fsspec_filesystem(str(out), LOCAL)


def test_the_cli_compacts_in_one_process_and_refuses_a_path_without_an_output(tmp_path, capsys):
    out = build_output(tmp_path / "out")
    before = row_set(read_results(str(out)))
    assert main(["compact", str(out), "--local", "--target-rows", "100"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"compacted {out}: 11 result files -> 1, 54 rows kept, 20 superseded rows dropped")
    assert row_set(read_results(str(out))) == before and len(result_files(str(out), LOCAL)) == 1

    assert main(["compact", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"internvl-batch compact: error: no output at {tmp_path / 'missing'}"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no result files to compact"):
        compact_output(str(tmp_path / "empty"))


def test_compaction_can_leave_out_the_orphans_the_latest_run_found(tmp_path):
    """`--drop-orphans`: the rows of the keys in the latest scan's orphans file (a PDF's pages under its
    document's key) are left out; every other current row is kept as it was."""
    from internvl_batch.keys import key_hashes
    from internvl_batch.orphans import write_orphan_keys

    out = build_output(tmp_path / "out")
    gone = key_hashes(["img001", "docB", "new2"], ["caption", "caption", "ocr"])
    write_orphan_keys(str(out), LOCAL, gone, RUNS[-1])
    before = read_results(str(out), LOCAL, drop_orphans=True)
    assert before.num_rows == read_results(str(out), LOCAL).num_rows - 3  # docB is one page row now
    summary = compact_output(str(out), LOCAL, drop_orphans=True)
    after = read_results(str(out), LOCAL)
    assert sorted(after.to_pylist(), key=str) == sorted(before.to_pylist(), key=str)
    assert summary["rows_kept"] == after.num_rows
