"""A job's output as the tools users already have read it, and an output of the legacy layout resumed.

The real job runs twice into one output (the second run resumes over a longer manifest; `two_runs.py`, shared
with `test_passthrough_job.py`), so it holds result files of two runs, both run records, the summary and the
report, and pass-through columns that one run wrote as int64 and the other as text. pyarrow.dataset, pandas,
polars, duckdb, Hugging Face `datasets` and Ray Data pointed at the output's `data/` read exactly the result
rows, and so do all but polars pointed at the output itself (polars reads every file under a directory, hidden
ones too). Then the same output laid out as the previous version left it (everything at the top) is resumed:
its done rows are not redone, and it is moved into the current layout.
"""

import logging
import os
import shutil

import pytest

from internvl_batch.job import run_job
from internvl_batch.output_dir import META_DIR, data_path, read_summary, report_path, runs_path
from internvl_batch.results import read_results
from tests.integration.two_runs import FIRST_ROWS, ROWS, job_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def job(ray_local, two_runs):
    """(root, output, first run's summary, second run's summary): two runs of the real job into one output
    (`two_runs.py`; its rows carry pass-through columns, whose type the first run fixed)."""
    return two_runs.root, two_runs.out, two_runs.first, two_runs.second


@pytest.fixture(scope="module")
def results(job):
    """The output's current rows as the job reads them (no row of it was superseded: each id was done once; one
    is an error row, whose pass-through value did not fit)."""
    table = read_results(str(job[1]))
    assert table.num_rows == ROWS
    return table


def check(ids, columns, results):
    """Exactly the result rows: every id once, and the result files' columns (nothing read from other files)."""
    assert sorted(ids) == sorted(results.column("id").to_pylist())
    assert set(columns) == set(results.column_names)


def test_the_layout(job):
    _, out, first, second = job
    assert sorted(os.listdir(out)) == [META_DIR, "data"]
    names = sorted(os.listdir(data_path(out)))
    assert all(name.startswith(("part-" + first["run_id"], "part-" + second["run_id"])) for name in names)
    assert {name[5:34] for name in names} == {first["run_id"], second["run_id"]}
    assert sorted(os.listdir(runs_path(out))) == [f"{first['run_id']}.json", f"{second['run_id']}.json"]
    assert read_summary(out)["run_id"] == second["run_id"] and os.path.getsize(report_path(out)) > 1000


@pytest.mark.parametrize("where", ["data", "output"])
def test_pyarrow_dataset(job, results, where):
    import pyarrow.dataset as ds

    path = data_path(job[1]) if where == "data" else str(job[1])
    table = ds.dataset(path).to_table()
    check(table.column("id").to_pylist(), table.column_names, results)


@pytest.mark.parametrize("where", ["data", "output"])
def test_pandas(job, results, where):
    import pandas as pd

    frame = pd.read_parquet(data_path(job[1]) if where == "data" else str(job[1]))
    check(frame["id"].tolist(), frame.columns, results)


@pytest.mark.parametrize("how", ["read", "scan", "glob"])
def test_polars_at_data(job, results, how):
    """polars needs `data/` (or a glob of Parquet files): at the output's top it would read the run records."""
    import polars as pl

    out = job[1]
    if how == "read":
        frame = pl.read_parquet(data_path(out))
    elif how == "scan":
        frame = pl.scan_parquet(data_path(out)).collect()
    else:
        frame = pl.read_parquet(f"{out}/**/*.parquet")
    check(frame["id"].to_list(), frame.columns, results)


@pytest.mark.parametrize("pattern", ["{data}", "{data}/*.parquet", "{output}", "{output}/**/*.parquet"])
def test_duckdb(job, results, pattern):
    import duckdb

    path = pattern.format(data=data_path(job[1]), output=job[1])
    with duckdb.connect() as db:
        relation = db.sql(f"SELECT * FROM read_parquet('{path}')")
        check([row[0] for row in relation.select("id").fetchall()], relation.columns, results)


@pytest.mark.parametrize("how", ["data", "output", "parquet-data_dir-output"])
def test_hugging_face_datasets(job, results, how, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    out, cache = job[1], str(tmp_path / "hf-cache")
    if how == "data":
        loaded = datasets.load_dataset(data_path(out), cache_dir=cache)
    elif how == "output":
        loaded = datasets.load_dataset(str(out), cache_dir=cache)
    else:
        loaded = datasets.load_dataset("parquet", data_dir=str(out), cache_dir=cache)
    assert list(loaded) == ["train"]
    check(loaded["train"]["id"], loaded["train"].column_names, results)


@pytest.mark.parametrize("where", ["data", "output"])
def test_ray_data(job, results, where):
    import ray.data

    dataset = ray.data.read_parquet(data_path(job[1]) if where == "data" else str(job[1]))
    rows = dataset.select_columns(["id"]).take_all()
    check([row["id"] for row in rows], dataset.columns(), results)


def test_an_output_of_the_legacy_layout_resumes_and_is_moved(job, results, tmp_path, caplog):
    """The output as the previous version left it (result files, `_runs/`, `_summary.json`, `report.html` at
    the top), one result file of its second run lost: the rerun redoes only that file's rows."""
    root, out, first, second = job
    legacy = tmp_path / "legacy"
    shutil.copytree(out, legacy)
    for name in os.listdir(legacy / "data"):
        os.replace(legacy / "data" / name, legacy / name)
    os.replace(runs_path(legacy), legacy / "_runs")
    os.replace(legacy / META_DIR / "summary.json", legacy / "_summary.json")
    os.replace(report_path(legacy), legacy / "report.html")
    os.rmdir(legacy / "data")
    os.rmdir(legacy / META_DIR)
    lost = sorted(legacy.glob(f"part-{second['run_id']}-*.parquet"))
    assert len(lost) == 1
    os.unlink(lost[0])
    before = {row["id"]: row["run_id"] for row in read_results(str(legacy)).to_pylist()}
    assert len(before) == FIRST_ROWS and set(before.values()) == {first["run_id"]}

    with caplog.at_level(logging.INFO, logger="internvl_batch.output"):
        third = run_job(job_config(root, legacy, "all.jsonl", report=False))
    assert (third["rows_already_done"], third["rows_processed"]) == (FIRST_ROWS, ROWS - FIRST_ROWS)
    current = {row["id"]: row["run_id"] for row in read_results(str(legacy)).to_pylist()}
    assert sorted(current) == sorted(results.column("id").to_pylist())
    assert {i: current[i] for i in before} == before  # the done rows were not redone
    assert sorted(os.listdir(legacy)) == [META_DIR, "data"]
    runs = sorted(name[:-5] for name in os.listdir(runs_path(legacy)))
    assert runs == [first["run_id"], second["run_id"], third["run_id"]]
    moved = [r.getMessage() for r in caplog.records if "moved to the current layout" in r.getMessage()]
    assert len(moved) == 1 and moved[0].endswith(": 2 run records, 2 result files, 1 summary, 1 report"), moved
