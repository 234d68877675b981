"""The output directory is the job's own: `prepare_output` refuses places no job should write into, `resume:
false` deletes only result files the job wrote (of runs with a run record), the reader reads only those, and
every file is written as a new file renamed over its name, so a link there is replaced, never followed. Its
layout (`data/` holds the result files and nothing else; the rest is under `.internvl-batch/`), and the move of
an output of the legacy layout (everything at the top) into it when a run starts. Real files under tmp_path,
and a real S3 endpoint (moto's server on 127.0.0.1) for the object-store rules."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from internvl_batch.config import OutputConfig, StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.output_dir import (
    META_DIR,
    data_path,
    new_run_id,
    prepare_output,
    read_summary,
    report_path,
    runs_path,
    summary_path,
    write_summary,
)
from internvl_batch.results import read_results, result_files, write_result_file

LOCAL = StorageConfig()
NOT_ALLOWED = "use another path (--force does not allow this)"


def rows(run_id: str, ids: list[str]) -> pa.Table:
    return pa.table(
        {"id": ids, "task": ["caption"] * len(ids), "status": ["ok"] * len(ids), "run_id": [run_id] * len(ids)}
    )


def users_parquet(path) -> bytes:
    """A Parquet file of the user's, shaped like results (it would be read as results if it were taken for one)."""
    pq.write_table(rows("20990101T000000000000Z-ffffff", ["theirs"]), path)
    return path.read_bytes()


def run(out, storage=LOCAL, resume=True, force=False, ids=("a", "b"), finish=True) -> str:
    """What a job does to its output: prepare it, write result files, and (unless killed) its summary."""
    run_id = new_run_id()
    prepare_output(OutputConfig(path=str(out), resume=resume, force=force), storage, run_id)
    for name in ids:
        write_result_file(rows(run_id, [name]), str(out), storage, run_id)
    if finish:
        write_summary(str(out), storage, {"run_id": run_id, "status": "ok"})
    return run_id


def parts(out) -> list[str]:
    """Names of the result files in `data/`."""
    return sorted(p.name for p in Path(data_path(out)).glob("part-*.parquet"))


def legacy_parts(out) -> list[str]:
    """Names of the result files at the top (the legacy layout)."""
    return sorted(p.name for p in out.glob("part-*.parquet"))


def records(out) -> list[str]:
    """Run ids of the run records in `.internvl-batch/runs/`."""
    return sorted(json.loads(p.read_text())["run_id"] for p in Path(runs_path(out)).iterdir())


def legacy_part(directory, run_id: str, ids: list[str]) -> str:
    """A result file as the previous version wrote it: at the output's top (or in `directory`), same name."""
    name = f"part-{run_id}-{uuid.uuid4().hex[:12]}.parquet"
    pq.write_table(rows(run_id, ids), directory / name)
    return name


def legacy_output(out, runs: dict[str, list[str]], report: bool = True):
    """An output as the previous version left it: per run (oldest first) a run record in `_runs/` and a result
    file per id at the top; the last run's `_summary.json`; `report.html`."""
    (out / "_runs").mkdir(parents=True)
    for run_id, ids in runs.items():
        (out / "_runs" / f"{run_id}.json").write_text(json.dumps({"run_id": run_id, "status": "ok"}))
        for name in ids:
            legacy_part(out, run_id, [name])
    (out / "_summary.json").write_text(json.dumps({"run_id": run_id, "status": "ok"}))
    if report:
        (out / "report.html").write_text("<html>old page</html>")
    return out


def foreign_message(path, example: str) -> str:
    return (
        f"output.path {path} holds files this job did not write (e.g. {example}): use another path or --force "
        "(output.force: true; only the job's own files are ever deleted)"
    )


# --- places no job writes into ----------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_an_empty_output_path_is_refused_and_the_users_parquet_survives(tmp_path, monkeypatch, force):
    monkeypatch.chdir(tmp_path)
    mine = users_parquet(tmp_path / "mydata.parquet")
    with pytest.raises(ConfigError) as error:
        prepare_output(OutputConfig(path="", resume=False, force=force), LOCAL, new_run_id())
    assert str(error.value) == f"output.path is empty (that is the working directory): {NOT_ALLOWED}"
    assert (tmp_path / "mydata.parquet").read_bytes() == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata.parquet"]  # nothing written either


@pytest.mark.parametrize("path", ["/", "//", "file:///", "/.."])
@pytest.mark.parametrize("force", [False, True])
def test_a_filesystem_root_is_refused_even_with_force(path, force):
    with pytest.raises(ConfigError) as error:
        prepare_output(OutputConfig(path=path, resume=False, force=force), LOCAL, new_run_id())
    root = os.path.abspath(path.removeprefix("file://"))  # "/" (POSIX keeps a leading "//")
    assert str(error.value) == f"output.path {path} is a filesystem root ({root}): {NOT_ALLOWED}"


def test_a_link_to_the_root_is_refused(tmp_path):
    (tmp_path / "root").symlink_to("/")
    with pytest.raises(ConfigError, match=re.escape(f"is a filesystem root (/): {NOT_ALLOWED}")):
        prepare_output(OutputConfig(path=str(tmp_path / "root"), force=True), LOCAL)


@pytest.mark.parametrize("force", [False, True])
def test_the_home_directory_is_refused_even_with_force(tmp_path, monkeypatch, force):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for path in (str(home), str(home) + "/", str(home / "x" / "..")):
        with pytest.raises(ConfigError) as error:
            prepare_output(OutputConfig(path=path, resume=False, force=force), LOCAL, new_run_id())
        assert str(error.value) == f"output.path {path} is the home directory ({home}): {NOT_ALLOWED}"
    assert list(home.iterdir()) == []
    run(home / "captions")  # a directory under it is fine


def test_a_directory_holding_someone_elses_files_is_refused_unless_forced(tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    mine = users_parquet(out / "mydata.parquet")
    with pytest.raises(ConfigError) as error:
        prepare_output(OutputConfig(path=str(out), resume=False), LOCAL, new_run_id())
    assert str(error.value) == foreign_message(out, "mydata.parquet")
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in out.iterdir()) == ["mydata.parquet"]  # refused before anything was written
    with pytest.raises(ConfigError, match=re.escape(foreign_message(out, "mydata.parquet"))):
        prepare_output(OutputConfig(path=str(out), resume=True), LOCAL)  # resuming writes there too

    first = run(out, resume=False, force=True)
    second = run(out, resume=False, force=True, ids=("c",))
    assert (out / "mydata.parquet").read_bytes() == mine  # never deleted...
    assert [p.split("-")[1] for p in parts(out)] == [second.split("-")[0]]  # ...the first run's files were
    current = read_results(str(out))  # ...and never read as results
    assert current.column("id").to_pylist() == ["c"] and first != second
    assert records(out) == [first, second]


def test_an_empty_or_new_directory_and_the_jobs_own_output_are_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    run(tmp_path / "empty")
    run(tmp_path / "new" / "deeper")
    out = tmp_path / "again"
    run(out, resume=False)
    Path(report_path(out)).write_text("<html></html>")
    (out / "_runs").mkdir()
    for half in (  # left by killed writers
        "data/.part-20260101T000000000000Z-abcdef-0123456789ab.parquet.0123456789ab.tmp",
        ".internvl-batch/.summary.json.0123456789ab.tmp",
        ".internvl-batch/.report.html.0123456789ab.tmp",
        ".internvl-batch/runs/.20260101T000000000000Z-abcdef.json.0123456789ab.tmp",
        # and of earlier versions (the legacy layout)
        ".part-20260101T000000000000Z-abcdef-0123456789ab.parquet.tmp",
        ".part-20260101T000000000000Z-abcdef-0123456789ab.parquet.0123456789ab.tmp",
        "._summary.json.0123456789ab.tmp",
        ".report.html.0123456789ab.tmp",
        "_runs/.20260101T000000000000Z-abcdef.json.0123456789ab.tmp",
    ):
        (out / half).write_bytes(b"half")
    run(out, resume=False)  # repeated --no-resume runs into the job's own output (as the demo does)
    assert not list(out.rglob(".*.tmp")) and len(parts(out)) == 2
    assert sorted(os.listdir(out)) == [META_DIR, "data"]  # the emptied `_runs/` is gone


# --- what resume: false deletes, and what is read as results -------------------------------------------------


def test_a_second_no_resume_run_deletes_the_first_runs_files_only(tmp_path):
    out = tmp_path / "out"
    first = run(out, resume=False, ids=("a", "b", "c"))
    assert len(parts(out)) == 3
    second = run(out, resume=False, ids=("b",))
    assert len(parts(out)) == 1 and parts(out)[0].startswith(f"part-{second}-")
    assert read_results(str(out)).to_pylist() == [{"id": "b", "task": "caption", "status": "ok", "run_id": second}]
    assert records(out) == [first, second]  # history stays
    assert read_summary(out)["run_id"] == second


def test_a_killed_run_is_recorded_when_it_starts_and_cleaned_by_the_next_no_resume_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    users_parquet(out / "mydata.parquet")
    killed = run(out, force=True, finish=False)  # killed after writing two result files
    record = json.loads((Path(runs_path(out)) / f"{killed}.json").read_text())
    assert record["run_id"] == killed and record["status"] == "running" and "started_at" in record
    assert read_summary(out) is None and not Path(summary_path(out)).exists()
    assert sorted(read_results(str(out)).column("id").to_pylist()) == ["a", "b"]  # a resume would keep them
    run(out, resume=False, force=True, ids=("z",))
    assert sorted(read_results(str(out)).column("id").to_pylist()) == ["z"] and len(parts(out)) == 1
    assert (out / "mydata.parquet").exists()


def test_part_files_of_an_earlier_version_without_a_run_record(tmp_path):
    """Before runs were recorded when they start, a killed run left result files and no record: they are the
    job's while the output holds nothing but the job's kinds of files (read, resumed from, deleted); next to
    someone else's files they are left alone (neither read nor deleted)."""
    out = tmp_path / "old"
    old_run = "20250101T000000000000Z-abcdef"
    out.mkdir()
    legacy_part(out, old_run, ["old"])
    (out / "_summary.json").write_text("{}")
    assert read_results(str(out)).column("id").to_pylist() == ["old"]
    run(out, resume=False, ids=("new",))
    assert read_results(str(out)).column("id").to_pylist() == ["new"] and len(parts(out)) == 1
    assert legacy_parts(out) == []  # moved to data/, then deleted (resume: false)

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    old = legacy_part(mixed, old_run, ["old"])
    (mixed / "notes.txt").write_text("mine")
    assert result_files(str(mixed), LOCAL) == []
    run(mixed, resume=False, force=True, ids=("new",))
    assert legacy_parts(mixed) == [old]  # not the job's: neither moved nor deleted
    assert len(parts(mixed)) == 1 and read_results(str(mixed)).column("id").to_pylist() == ["new"]


@pytest.mark.parametrize("where", ["", "data"])
def test_only_names_the_job_gives_are_results(tmp_path, where):
    """At the top and inside `data/` alike: other files there are someone else's."""
    out = tmp_path / "out"
    run_id = run(out)
    spark = "part-00000-1b5c6f1e-8f5e-4c9e-9d5f-2f1e3c4b5a6d.parquet"  # last group: 12 hex digits
    theirs = {"mydata.parquet", spark, f"part-{run_id}.parquet", "_hidden.parquet", ".hidden.parquet"}
    for name in theirs:
        users_parquet(out / where / name)
    assert len(result_files(str(out), LOCAL)) == 2
    assert sorted(read_results(str(out)).column("id").to_pylist()) == ["a", "b"]
    with pytest.raises(ConfigError, match="holds files this job did not write"):
        run(out, resume=False)
    second = run(out, resume=False, force=True, ids=("c",))
    assert theirs <= set(os.listdir(out / where))
    assert [p.rsplit("/", 1)[-1][:34] for p in result_files(str(out), LOCAL)] == [f"part-{second}"]
    assert read_results(str(out)).column("id").to_pylist() == ["c"]


def test_result_files_are_named_after_real_run_ids(tmp_path):
    with pytest.raises(ValueError, match="run id 'run-1' is not one new_run_id makes"):
        write_result_file(rows("run-1", ["a"]), str(tmp_path), LOCAL, "run-1")
    assert list(tmp_path.iterdir()) == []


# --- the layout, and the move of a legacy output into it ----------------------------------------------------


def test_data_holds_the_result_files_and_nothing_else(tmp_path):
    from internvl_batch.report import write_report

    out = tmp_path / "out"
    first = run(out)
    second = run(out, ids=("c",))
    write_report(str(out), LOCAL)
    assert sorted(os.listdir(out)) == [META_DIR, "data"]
    assert len(parts(out)) == 3 and sorted(os.listdir(data_path(out))) == parts(out)
    assert all(re.fullmatch(rf"part-({first}|{second})-[0-9a-f]{{12}}\.parquet", name) for name in parts(out))
    assert sorted(os.listdir(out / META_DIR)) == ["report.html", "runs", "summary.json"]
    assert records(out) == [first, second] and read_summary(out)["run_id"] == second
    assert pq.ParquetDataset(data_path(out)).read().num_rows == 3  # a reader pointed at data/ reads the results
    assert data_path("s3://bucket/out/") == "s3://bucket/out/data"
    assert report_path("s3://bucket/out") == "s3://bucket/out/.internvl-batch/report.html"


def test_a_legacy_output_is_read_where_it_is_and_moved_when_a_run_starts(tmp_path, caplog):
    from internvl_batch.report import write_report
    from internvl_batch.report.collect import collect

    old, older = "20250101T000000000000Z-000001", "20250102T000000000000Z-000002"
    out = legacy_output(tmp_path / "out", {old: ["a", "b"], older: ["c"]})
    (out / "._summary.json.0123456789ab.tmp").write_text("half")  # a legacy writer killed mid-file
    before = sorted(os.listdir(out))
    # Reading moves nothing: the legacy layout's results, run records and summary are read where they are.
    assert sorted(read_results(str(out)).column("id").to_pylist()) == ["a", "b", "c"]
    data = collect(str(out), LOCAL)
    assert (data.files_total, [r["run_id"] for r in data.runs], data.summary["run_id"]) == (3, [old, older], older)
    assert read_summary(out)["run_id"] == older and sorted(os.listdir(out)) == before
    write_report(str(out), LOCAL)  # the report command writes the current layout's page, and moves nothing
    assert sorted(os.listdir(out)) == sorted([*before, META_DIR])

    with caplog.at_level(logging.INFO, logger="internvl_batch.output"):
        new = run(out, ids=("d",))
    assert sorted(os.listdir(out)) == [META_DIR, "data"]  # the emptied `_runs/` and the half-written file too
    assert len(parts(out)) == 4 and legacy_parts(out) == [] and records(out) == [old, older, new]
    assert "old page" not in Path(report_path(out)).read_text()  # the newer page was kept
    assert read_summary(out)["run_id"] == new
    assert sorted(read_results(str(out)).column("id").to_pylist()) == ["a", "b", "c", "d"]
    moved = [r.getMessage() for r in caplog.records if "moved to the current layout" in r.getMessage()]
    assert len(moved) == 1 and moved[0].endswith(": 2 run records, 3 result files, 1 summary, 1 report"), moved
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="internvl_batch.output"):
        run(out, ids=())  # moved once: nothing is left to move
    assert not [r for r in caplog.records if "moved" in r.getMessage()]


def test_a_move_cut_short_counts_each_file_once_and_the_next_run_finishes_it(tmp_path):
    """What a move killed between copying and deleting leaves (object stores copy, then delete): both copies.
    Each is read once (the copy in the current layout), and the next run deletes the originals."""
    old = "20250101T000000000000Z-000001"
    out = legacy_output(tmp_path / "out", {old: ["a", "b"]}, report=False)
    (out / "data").mkdir()
    (out / META_DIR / "runs").mkdir(parents=True)
    copied = legacy_parts(out)[0]
    shutil.copy(out / copied, out / "data" / copied)
    shutil.copy(out / "_runs" / f"{old}.json", Path(runs_path(out)) / f"{old}.json")
    shutil.copy(out / "_summary.json", summary_path(out))
    files = result_files(str(out), LOCAL)
    assert len(files) == 2 and str(out / "data" / copied) in files and str(out / copied) not in files
    assert read_results(str(out)).column("id").to_pylist() == ["a", "b"]  # no row twice

    new = run(out, ids=())
    assert legacy_parts(out) == [] and len(parts(out)) == 2 and records(out) == [old, new]
    assert sorted(os.listdir(out)) == [META_DIR, "data"]


def test_only_the_jobs_files_move_and_someone_elses_stay(tmp_path):
    old, unrecorded = "20250101T000000000000Z-000001", "20250103T000000000000Z-000003"
    out = legacy_output(tmp_path / "out", {old: ["a"]})
    (out / "notes.txt").write_text("mine")
    (out / "_runs" / "notes.txt").write_text("mine too")
    stray = legacy_part(out, unrecorded, ["stray"])  # an unrecorded run's next to someone else's: not the job's
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    with pytest.raises(ConfigError, match=re.escape(foreign_message(out, "notes.txt"))):
        run(out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # refused: nothing moved

    run(out, force=True, ids=())
    assert legacy_parts(out) == [stray] and len(parts(out)) == 1
    assert (out / "notes.txt").read_text() == "mine" and os.listdir(out / "_runs") == ["notes.txt"]
    assert read_results(str(out)).column("id").to_pylist() == ["a"]
    fresh = tmp_path / "fresh"
    run(fresh)
    for inside in (f"{META_DIR}/notes.txt", "data/mine.parquet"):  # in either folder of the layout too
        (fresh / inside).write_bytes(b"theirs")
        with pytest.raises(ConfigError, match=re.escape(foreign_message(fresh, inside))):
            prepare_output(OutputConfig(path=str(fresh)), LOCAL)
        (fresh / inside).unlink()


def test_no_resume_deletes_the_jobs_result_files_of_either_layout(tmp_path):
    old = "20250101T000000000000Z-000001"
    out = legacy_output(tmp_path / "out", {old: ["a", "b"]})
    (out / "data").mkdir()
    shutil.copy(out / legacy_parts(out)[0], out / "data")  # one moved halfway
    new = run(out, resume=False, ids=("z",))
    assert legacy_parts(out) == [] and [name[5:34] for name in parts(out)] == [new]
    assert records(out) == [old, new] and read_results(str(out)).column("id").to_pylist() == ["z"]


# --- links in the output are replaced, never followed ----------------------------------------------------------


def test_links_to_outside_files_are_replaced_not_written_through(tmp_path):
    from internvl_batch.report import write_report

    outside = tmp_path / "precious"
    outside.mkdir()
    for name in ("summary", "record", "report", "elsewhere"):
        (outside / name).write_text(f"{name}: keep me")
    out = tmp_path / "out"
    run_id = new_run_id()
    summary, record, report = Path(summary_path(out)), Path(runs_path(out)) / f"{run_id}.json", Path(report_path(out))
    record.parent.mkdir(parents=True)
    summary.symlink_to(outside / "summary")
    record.symlink_to(outside / "record")
    report.symlink_to(outside / "report")
    (tmp_path / "report-link.html").symlink_to(outside / "elsewhere")

    prepare_output(OutputConfig(path=str(out)), LOCAL, run_id)  # the start record replaces its link
    assert not record.is_symlink()
    write_result_file(rows(run_id, ["a"]), str(out), LOCAL, run_id)
    write_summary(str(out), LOCAL, {"run_id": run_id, "status": "ok"})
    assert write_report(str(out), LOCAL) == str(report)
    assert write_report(str(out), LOCAL, out=str(tmp_path / "report-link.html")) == str(tmp_path / "report-link.html")

    for name in ("summary", "record", "report", "elsewhere"):
        assert (outside / name).read_text() == f"{name}: keep me"
    for link in (summary, record, report):
        assert link.is_file() and not link.is_symlink()
    assert not (tmp_path / "report-link.html").is_symlink()
    assert read_summary(out)["run_id"] == run_id
    assert "<html" in report.read_text().lower()
    assert not [p for p in out.rglob("*.tmp")] and not [p for p in tmp_path.glob(".*.tmp")]


def test_a_write_that_fails_leaves_the_target_and_no_temporary_file(tmp_path):
    from internvl_batch.output_dir import write_output_file

    (tmp_path / "report.html").mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        write_output_file(str(tmp_path / "report.html"), LOCAL, "page")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"] and (tmp_path / "report.html").is_dir()


# --- the command line ----------------------------------------------------------------------------------------------


def test_force_on_the_command_line():
    from internvl_batch.cli import build_parser, caption_parser, overrides_from_args

    args = build_parser().parse_args(["run", "job.yaml", "--no-resume", "--force"])
    assert overrides_from_args(args) == ["output.resume=false", "output.force=true"]
    assert overrides_from_args(build_parser().parse_args(["run", "job.yaml"])) == []
    assert "output.force=true" in overrides_from_args(caption_parser().parse_args(["--config", "c.yaml", "--force"]))
    assert build_parser().parse_args(["demo", "--force"]).force


def test_the_job_refuses_a_foreign_output_before_ray_and_deletes_nothing(tmp_path, tiny_checkpoint, capsys):
    from internvl_batch.cli import caption_main

    out = tmp_path / "shared"
    out.mkdir()
    mine = users_parquet(out / "mydata.parquet")
    (tmp_path / "m.jsonl").write_text('{"id": "a", "image": "a.jpg"}\n')
    config = tmp_path / "job.yaml"
    config.write_text(
        json.dumps(
            {
                "input": {"manifests": str(tmp_path / "m.jsonl")},
                "output": {"path": str(out)},
                "model": {"path": str(tiny_checkpoint)},
            }
        )
    )
    assert caption_main(["--config", str(config), "--no-resume"]) == 2
    assert capsys.readouterr().err == f"internvl-batch: error: {foreign_message(out, 'mydata.parquet')}\n"
    assert sorted(p.name for p in out.iterdir()) == ["mydata.parquet"] and (out / "mydata.parquet").read_bytes() == mine


# --- object stores ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_storage():
    """moto's S3 server on 127.0.0.1, credentials in the environment (as users provide them)."""
    import s3fs
    from moto.server import ThreadedMotoServer

    from tests.integration.conftest import AWS_ENV, free_port

    with pytest.MonkeyPatch.context() as env:
        for key, value in AWS_ENV.items():
            env.setenv(key, value)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            yield (
                StorageConfig(endpoint_url=endpoint),
                s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True),
            )
        finally:
            server.stop()


def test_object_store_outputs(s3_storage):
    """The same rules on S3: a prefix holding someone else's objects is refused unless forced, and then only the
    job's objects are deleted; a bucket root is a fine output while it holds only the job's objects; a URI
    without a bucket is refused."""
    storage, s3 = s3_storage
    s3.mkdir("shared")
    s3.pipe("shared/out/mydata.parquet", b"theirs")
    s3.pipe("shared/other/part-20250101T000000000000Z-abcdef-0123456789ab.parquet", b"another prefix")
    with pytest.raises(ConfigError) as error:
        prepare_output(OutputConfig(path="s3://shared/out", resume=False), storage, new_run_id())
    assert str(error.value) == foreign_message("s3://shared/out", "mydata.parquet")
    s3.pipe("shared/out/sub/deeper.txt", b"theirs")  # a "directory" of someone else's
    with pytest.raises(ConfigError, match=re.escape("did not write (e.g. ")):
        prepare_output(OutputConfig(path="s3://shared/out/", resume=False), storage, new_run_id())

    first = run("s3://shared/out", storage, resume=False, force=True, ids=("a", "b"))
    second = run("s3://shared/out", storage, resume=False, force=True, ids=("c",))
    left = sorted(p.split("/", 2)[2] for p in s3.find("shared/out"))
    assert "mydata.parquet" in left and "sub/deeper.txt" in left and f"{META_DIR}/runs/{first}.json" in left
    assert [p for p in left if "part-" in p] == [p for p in left if p.startswith(f"data/part-{second}-")] != []
    assert read_results("s3://shared/out", storage).column("id").to_pylist() == ["c"]
    assert s3.cat("shared/other/part-20250101T000000000000Z-abcdef-0123456789ab.parquet") == b"another prefix"

    s3.mkdir("dedicated")
    run("s3://dedicated", storage, resume=False)
    only = run("s3://dedicated/", storage, resume=False, ids=("z",))
    assert read_results("s3://dedicated", storage).column("id").to_pylist() == ["z"]
    assert all(p.rsplit("/", 1)[-1].startswith((f"part-{only}", "summary", "20")) for p in s3.find("dedicated"))
    with pytest.raises(ConfigError, match=re.escape("holds files this job did not write (e.g. other)")):
        prepare_output(OutputConfig(path="s3://shared"), storage)  # a shared bucket's root: refused
    with pytest.raises(ConfigError, match=re.escape(f"output.path s3:// names no bucket: {NOT_ALLOWED}")):
        prepare_output(OutputConfig(path="s3://", force=True), storage)


def test_a_legacy_output_on_an_object_store_moves_by_copy_then_delete(s3_storage):
    """On S3: the job's objects of the legacy layout move (a server-side copy, then the original's deletion);
    a copy already in place, as a move killed in between leaves it, only has its original deleted; someone
    else's objects stay."""
    storage, s3 = s3_storage
    old = "20250101T000000000000Z-000001"
    s3.mkdir("legacy")
    names = []
    for ids in (["a"], ["b"], ["c"]):
        names.append(f"part-{old}-{uuid.uuid4().hex[:12]}.parquet")
        buffer = io.BytesIO()
        pq.write_table(rows(old, ids), buffer)
        s3.pipe(f"legacy/out/{names[-1]}", buffer.getvalue())
    s3.pipe(f"legacy/out/_runs/{old}.json", json.dumps({"run_id": old, "status": "ok"}).encode())
    s3.pipe("legacy/out/_summary.json", json.dumps({"run_id": old, "status": "ok"}).encode())
    s3.pipe("legacy/out/report.html", b"<html>old page</html>")
    s3.pipe("legacy/out/notes.txt", b"theirs")
    s3.copy(f"legacy/out/{names[0]}", f"legacy/out/data/{names[0]}")  # copied by a move killed before the delete
    assert sorted(read_results("s3://legacy/out", storage).column("id").to_pylist()) == ["a", "b", "c"]

    new = new_run_id()
    prepare_output(OutputConfig(path="s3://legacy/out", force=True), storage, new)
    s3.invalidate_cache()
    left = sorted(p.split("/", 2)[2] for p in s3.find("legacy/out"))
    expected = [
        f"{META_DIR}/{name}" for name in ("report.html", f"runs/{old}.json", f"runs/{new}.json", "summary.json")
    ]
    assert left == sorted([*expected, *(f"data/{name}" for name in names), "notes.txt"])
    assert s3.cat(f"legacy/{report_path('out')}") == b"<html>old page</html>"
    assert sorted(read_results("s3://legacy/out", storage).column("id").to_pylist()) == ["a", "b", "c"]
    assert read_summary("s3://legacy/out", storage)["run_id"] == old
