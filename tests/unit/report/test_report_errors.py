"""`internvl-batch report` on a path that is not a job's output: one line saying what is there (exit code 2),
never a traceback, and no page written; and on an output of the legacy layout, the report as before."""

import json
import os

import pytest

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.output_dir import report_path, write_summary
from internvl_batch.report import write_report
from tests.unit.report.test_report import write_rows

SUFFIX = "its result files are named data/part-<run id>-<12 hex>.parquet)"


def report_error(path) -> str:
    with pytest.raises(ConfigError) as error:
        write_report(str(path), StorageConfig())
    assert "\n" not in str(error.value)
    return str(error.value)


def test_a_path_without_an_output(tmp_path):
    assert report_error(tmp_path / "missing") == f"no output at {tmp_path / 'missing'}"
    assert not (tmp_path / "missing").exists()


def test_an_output_without_results_says_what_it_holds(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert report_error(out) == f"{out} holds no results of this job (it is empty; {SUFFIX}"
    write_summary(str(out), StorageConfig(), {"run_id": "20260101T000000000000Z-000001", "status": "ok"})
    assert report_error(out) == f"{out} holds no results of this job (found 1 run record(s); a run summary; {SUFFIX}"
    for name in ("notes.txt", "a.parquet", "b.parquet", "c.parquet"):
        (out / name).write_text("theirs")
    assert report_error(out).endswith(
        "found 1 run record(s); a run summary; files the job does not write: a.parquet, b.parquet, c.parquet, ...; "
        + SUFFIX
    )
    assert not os.path.exists(report_path(out))  # refused before anything was written


def test_the_command_line_says_it_in_one_line(tmp_path, capsys):
    from internvl_batch.cli import main

    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == f"internvl-batch report: error: no output at {tmp_path / 'missing'}\n"


def test_a_legacy_output_is_reported_where_it_is(tmp_path):
    """Result files, run records and summary at the top (the legacy layout): read there, nothing moved."""
    out = tmp_path / "out"
    out.mkdir()
    write_rows(str(out), [{"id": "a", "task": "caption", "status": "ok", "response": "A cat."}])
    for name in os.listdir(out / "data"):
        os.replace(out / "data" / name, out / name)
    os.rmdir(out / "data")
    run_id = next(iter(os.listdir(out)))[5:34]
    (out / "_runs").mkdir()
    (out / "_runs" / f"{run_id}.json").write_text(json.dumps({"run_id": run_id, "status": "ok"}))
    (out / "_summary.json").write_text(json.dumps({"run_id": run_id, "status": "ok"}))
    before = sorted(os.listdir(out))
    page = open(write_report(str(out), StorageConfig()), encoding="utf-8").read()
    assert "A cat." in page and run_id in page
    assert sorted(os.listdir(out)) == sorted([*before, ".internvl-batch"])
