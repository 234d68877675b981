"""The output directory: how the job writes there, what it may delete, what it refuses, how a legacy output moves.

The layout (`data/` for result files, `.internvl-batch/` for the summary, run records and report), which
files are the job's, and the listing both layouts share: `output_layout.py` (its names are re-exported here).

Every file is written under a fresh hidden temporary name in its directory and renamed over its name (local:
a link there is replaced, never followed), or uploaded in one PUT/multipart upload (object stores, where an
object exists only once complete), so a reader or a resume never sees half a file (`write_output_file`).

`prepare_output`, at the start of every run, refuses an empty path, a filesystem root, the home directory, and
(without `output.force`) an output that holds anything the job does not write; moves an output of the legacy
layout into the current one (`migrate_legacy_output`); and with `resume: false` deletes the job's result files,
nothing else. Reading (`results.read_results`, the report) never moves or deletes anything. Run records and
the summary are written with credentials in URIs redacted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import uuid
from datetime import datetime, timezone

from internvl_batch.config import OutputConfig, StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import fsspec_filesystem, is_local, local_path
from internvl_batch.output_foreign import first_foreign_entry
from internvl_batch.output_layout import (
    DATA_DIR,
    LEGACY_REPORT_FILE,
    LEGACY_RUNS_DIR,
    LEGACY_SUMMARY_FILE,
    META_DIR,
    REPORT_FILE,
    RESULT_FILE,
    RUN_ID,
    RUNS_DIR,
    SUMMARY_FILE,
    TOP,
    WRITE_CHECK_PREFIX,
    OutputListing,
    data_path,
    is_own_entry,
    list_output,
    report_path,
    run_record_path,
    runs_path,
    summary_path,
)
from internvl_batch.redact import redact_value

__all__ = [  # this module's, and the layout's names that the modules and tests reading an output use
    "DATA_DIR",
    "META_DIR",
    "REPORT_FILE",
    "RESULT_FILE",
    "RUN_ID",
    "RUNS_DIR",
    "SUMMARY_FILE",
    "OutputListing",
    "check_output_location",
    "data_path",
    "first_foreign_entry",
    "is_own_entry",
    "list_output",
    "migrate_legacy_output",
    "new_run_id",
    "prepare_output",
    "read_summary",
    "record_run",
    "run_record_path",
    "report_path",
    "runs_path",
    "summary_path",
    "summary_text",
    "write_output_file",
    "write_summary",
]

log = logging.getLogger("internvl_batch.output")

NOT_ALLOWED = "use another path (--force does not allow this)"


def _join(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"


def new_run_id() -> str:
    """Sortable by time: a later run's id sorts after an earlier one's."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def write_output_file(target: str, storage: StorageConfig, data: bytes | str) -> str:
    """Write `data` (str: UTF-8) as the file `target` (a local path or URI), whole or not at all; returns
    `target`. Locally through a new file under a fresh hidden name in the same directory (made if missing),
    renamed over the target: a link at the target is replaced by the file, and what it pointed to is never
    written. Object stores have no links and publish an object only once its upload completes: one PUT (or
    multipart upload)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fs, path = fsspec_filesystem(target, storage)
    if not is_local(target):
        with fs.open(path, "wb") as f:
            f.write(data)
        return target
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    # A new file (O_EXCL), never through a link (O_NOFOLLOW), with the usual permissions (umask applies).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # a rename: atomic on one filesystem; a link at `path` is itself replaced
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def check_output_location(output_path: str) -> None:
    """Refuse (ConfigError) an output no job should write into, whatever `output.force` says: an empty path
    (the working directory), a filesystem root, the home directory, an object-store URI without a bucket."""
    if is_local(output_path):
        raw = local_path(output_path)
        if not raw.strip():
            raise ConfigError(f"output.path is empty (that is the working directory): {NOT_ALLOWED}")
        home = os.path.expanduser("~")
        homes = {os.path.abspath(home), os.path.realpath(home)} if home != "~" else set()
        for resolved in dict.fromkeys([os.path.abspath(raw), os.path.realpath(raw)]):
            if os.path.dirname(resolved) == resolved:
                raise ConfigError(f"output.path {output_path} is a filesystem root ({resolved}): {NOT_ALLOWED}")
            if resolved in homes:
                raise ConfigError(f"output.path {output_path} is the home directory ({resolved}): {NOT_ALLOWED}")
    elif not output_path.split("://", 1)[-1].strip("/"):
        raise ConfigError(f"output.path {output_path} names no bucket: {NOT_ALLOWED}")


def prepare_output(
    output: OutputConfig, storage: StorageConfig, run_id: str | None = None, start_record: dict | None = None
) -> None:
    """Check the output before anything runs, move a legacy output, record the run, without resume delete results.

    Refuses (ConfigError, before anything is written or deleted) the outputs of `check_output_location`, and,
    unless `output.force`, an output that holds anything the job does not write (`first_foreign_entry`). Then:
    fails fast when the output cannot be written; removes files left half-written by a killed writer; moves the
    job's files of the legacy layout into the current one (`migrate_legacy_output`); writes the run's start
    record `.internvl-batch/runs/<run_id>.json` (status "running"; `write_summary` replaces it at the end), so
    that the files of a run killed later are still known to be the job's; and with `resume: false` deletes the
    job's result files (`OutputListing.result_files`) and nothing else."""
    check_output_location(output.path)
    fs, path = fsspec_filesystem(output.path, storage)
    try:
        foreign = first_foreign_entry(fs, path, output.path)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"output {output.path} cannot be listed: {type(exc).__name__}: {exc}") from None
    if foreign is not None and not output.force:
        raise ConfigError(
            f"output.path {output.path} holds files this job did not write (e.g. {foreign}): use another path or "
            "--force (output.force: true; only the job's own files are ever deleted)"
        )
    try:
        for directory in (path, _join(path, DATA_DIR), _join(path, META_DIR)):
            fs.makedirs(directory, exist_ok=True)
        probe = _join(_join(path, META_DIR), f"{WRITE_CHECK_PREFIX}{uuid.uuid4().hex}")
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
        listing = list_output(fs, path)
        if listing.temps:
            fs.rm(listing.temps)  # left by a writer that was killed mid-file
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"output {output.path} is not writable: {type(exc).__name__}: {exc}") from None
    if listing.is_legacy:
        try:
            migrate_legacy_output(fs, path, listing, output.path)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(
                f"output {output.path} could not be moved to the current layout: {type(exc).__name__}: {exc} "
                "(nothing was lost: run again to finish the move)"
            ) from None
        listing = list_output(fs, path)
    try:
        if run_id is not None:
            record = {"run_id": run_id, "status": "running", "started_at": datetime.now(timezone.utc).isoformat()}
            record |= start_record or {}  # the config fingerprint: what made the files this run writes
            record_run(output.path, storage, record)
        if not output.resume and listing.result_files:
            fs.rm(listing.result_files)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"output {output.path} is not writable: {type(exc).__name__}: {exc}") from None


def migrate_legacy_output(fs, path: str, listing: OutputListing, output_path: str) -> dict[str, int]:
    """Move the job's files of the legacy layout (`listing`: of the output `path` in `fs`) into the current one;
    returns how many of each kind moved, and logs it in one line.

    Run records first (`_runs/<id>.json` -> `.internvl-batch/runs/`), so that the result files moved next are
    still known to be the job's; then result files (-> `data/`), then `_summary.json` and `report.html`; then
    the emptied `_runs/` is removed. Only the job's files move (`OutputListing.legacy_result_files`: not those of
    unrecorded runs next to someone else's files). Locally a file moves by a rename; on object stores by a copy,
    then the original's deletion: a move cut short in between leaves the copy, which is read in its place, and
    the next run's move, finding a file of that name and size in the new place, only deletes the original. The
    summary and report are views: where the current layout already holds one, it is kept and the legacy one
    deleted (the report command writes the current layout's page on an output it does not move)."""
    local = is_local(output_path)
    moved = {"run records": 0, "result files": 0, "summary": 0, "report": 0}
    for run, info in sorted(listing.legacy_records.items()):
        _move(fs, local, info, run_record_path(path, run), listing.records.get(run), same_size_only=True)
        moved["run records"] += 1
    for name, info in sorted(listing.legacy_result_files.items()):
        existing = listing.entry(DATA_DIR, name)
        _move(fs, local, info, _join(data_path(path), name), existing, same_size_only=True)
        moved["result files"] += 1
    for kind, legacy, current in (
        ("summary", LEGACY_SUMMARY_FILE, SUMMARY_FILE),
        ("report", LEGACY_REPORT_FILE, REPORT_FILE),
    ):
        info = listing.entry(TOP, legacy)
        if info and info.get("type") != "directory":
            target = _join(_join(path, META_DIR), current)
            _move(fs, local, info, target, listing.entry(META_DIR, current), same_size_only=False)
            moved[kind] += 1
    runs = listing.entry(TOP, LEGACY_RUNS_DIR)
    if local and runs and runs.get("type") == "directory":
        with contextlib.suppress(OSError):  # not empty: it holds files that are not the job's, which stay
            os.rmdir(runs["name"])
    if any(moved.values()):
        counts = ", ".join(f"{count} {kind}" for kind, count in moved.items())
        log.info(
            "output %s moved to the current layout (results in %s/, run records, summary and report in %s/): %s",
            output_path,
            DATA_DIR,
            META_DIR,
            counts,
        )
    return moved


def _move(fs, local: bool, source: dict, target: str, existing: dict | None, same_size_only: bool) -> None:
    """Move one file (`source`: its fsspec info) to `target`. Where `target` exists already (`existing`) and is
    the same size (or `same_size_only` is False), the source is only deleted."""
    if existing is not None and (not same_size_only or existing.get("size") == source.get("size")):
        fs.rm(source["name"])
        return
    if not local:
        fs.copy(source["name"], target)  # server-side; the object appears only once complete
        fs.rm(source["name"])
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.replace(source["name"], target)  # a rename: the file is in one place or the other, never both
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # not another filesystem (a `data/` linked elsewhere): a real failure
            raise
        with open(source["name"], "rb") as f:
            write_output_file(target, StorageConfig(), f.read())
        os.unlink(source["name"])


def record_run(output_path: str, storage: StorageConfig, record: dict) -> str:
    """Write `.internvl-batch/runs/<run_id>.json` (replacing the run's earlier record)."""
    return write_output_file(run_record_path(output_path, record["run_id"]), storage, summary_text(record))


def write_summary(output_path: str, storage: StorageConfig, summary: dict) -> str:
    """The run's summary as its run record (replacing its start record) and `.internvl-batch/summary.json`;
    returns where the summary went (a path in the output's filesystem)."""
    _, path = fsspec_filesystem(output_path, storage)
    record_run(output_path, storage, summary)
    write_output_file(summary_path(output_path), storage, summary_text(summary))
    return summary_path(path)


def summary_text(record: dict) -> str:
    """A run record as JSON, with credentials in URIs (a config's endpoint, manifests, ids) `REDACTED`."""
    plain = json.loads(json.dumps(record, default=str))  # only JSON types left, so every string is seen
    return json.dumps(redact_value(plain), indent=2)


def read_summary(output_path: str | os.PathLike, storage: StorageConfig | None = None) -> dict | None:
    """The output's last run's summary (the current layout's, else the legacy `_summary.json`), or None (none,
    or not a JSON object). Reads only."""
    fs, path = fsspec_filesystem(os.fspath(output_path), storage or StorageConfig())
    for file in (summary_path(path), _join(path, LEGACY_SUMMARY_FILE)):
        try:
            with fs.open(file, "r") as f:
                summary = json.load(f)
        except FileNotFoundError:
            continue
        except (ValueError, IsADirectoryError):
            return None
        return summary if isinstance(summary, dict) else None
    return None
