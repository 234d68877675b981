"""The output directory: what the job writes there and how, what it may delete, and what it refuses.

Layout of `output.path`:
    part-<run_id>-<12 hex>.parquet result files (`results.py` writes and reads them)
    _summary.json                  the last run's summary
    _runs/<run_id>.json            every run: written when it starts (status "running"), its summary at the end
    report.html                    the report (`output.report`)

Every file is written under a fresh hidden temporary name in its directory and renamed over its name (local:
a link there is replaced, never followed), or uploaded in one PUT/multipart upload (object stores, where an
object exists only once complete), so a reader or a resume never sees half a file (`write_output_file`).

The job's result files are those named exactly as it names them whose run is recorded in `_runs/`; files of
an unrecorded run (a run killed before run records were written at its start) count too while the output holds
nothing but the job's own kinds of files. Reading, resuming and `resume: false` (which deletes them) agree on
this (`list_output`); nothing else under the output is ever read as results or deleted. `prepare_output`
refuses an empty path, a filesystem root, the home directory, and (without `output.force`) a directory that
holds anything the job does not write. Run records are written with credentials in URIs redacted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from internvl_batch.config import OutputConfig, StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import fsspec_filesystem, is_local, local_path
from internvl_batch.redact import redact_value

SUMMARY_FILE = "_summary.json"
RUNS_DIR = "_runs"
REPORT_FILE = "report.html"  # `internvl_batch.report` writes it
WRITE_CHECK_PREFIX = "_write_check_"
RUN_ID = r"\d{8}T\d{12}Z-[0-9a-f]{6}"  # `new_run_id`
RESULT_FILE = re.compile(rf"part-({RUN_ID})-[0-9a-f]{{12}}\.parquet")
RUN_RECORD = re.compile(rf"({RUN_ID})\.json")
RUN_RECORD_TEMP = re.compile(rf"\.{RUN_ID}\.json\.[0-9a-f]{{12}}\.tmp")  # in `_runs/`
# Temporary names of files being written (`write_output_file`), and of result files of earlier versions.
TEMP_FILE = re.compile(r"\.(part-.*|_summary\.json\.[0-9a-f]{12}|report\.html\.[0-9a-f]{12})\.tmp")
NOT_ALLOWED = "use another path (--force does not allow this)"


def _join(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"


def new_run_id() -> str:
    """Sortable by time: a later run's id sorts after an earlier one's."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def is_own_entry(name: str) -> bool:
    """Whether a name at the top of an output is one the job writes there (result files, summaries, the run
    records, the report, files being written, the write check)."""
    return bool(
        RESULT_FILE.fullmatch(name)
        or name in (SUMMARY_FILE, RUNS_DIR, REPORT_FILE)
        or name.startswith(WRITE_CHECK_PREFIX)
        or TEMP_FILE.fullmatch(name)
    )


@dataclass
class OutputListing:
    """The top of an output directory, as the job sees it."""

    entries: dict[str, str] = field(default_factory=dict)  # name -> path in the filesystem
    runs: set[str] = field(default_factory=set)  # run ids recorded in `_runs/`
    run_temps: list[str] = field(default_factory=list)  # run records a killed writer left half-written

    @property
    def temps(self) -> list[str]:
        """Files left half-written by a killed writer."""
        return [p for name, p in self.entries.items() if TEMP_FILE.fullmatch(name)] + self.run_temps

    @property
    def foreign(self) -> list[str]:
        """Names the job does not write."""
        return sorted(name for name in self.entries if not is_own_entry(name))

    @property
    def result_files(self) -> list[str]:
        """The job's result files: named as it names them, of a recorded run; files of an unrecorded run (killed
        before run records were written when a run starts) only while nothing else is there."""
        anything_else = bool(self.foreign)
        return sorted(
            path
            for name, path in self.entries.items()
            if (match := RESULT_FILE.fullmatch(name)) and (match[1] in self.runs or not anything_else)
        )


def list_output(fs, path: str) -> OutputListing:
    """One listing of the output's top level and one of `_runs/` (fresh, not from a filesystem's cache: other
    processes write there)."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
    if not fs.isdir(path):
        return OutputListing()
    top = path.rstrip("/")
    entries = {_name(p): p for p in fs.ls(path, detail=False) if p.rstrip("/") != top and _name(p)}
    listing = OutputListing(entries)
    if RUNS_DIR in entries:
        with contextlib.suppress(Exception):
            fs.invalidate_cache(entries[RUNS_DIR])
        for record in fs.ls(entries[RUNS_DIR], detail=False):
            if match := RUN_RECORD.fullmatch(_name(record)):
                listing.runs.add(match[1])
            elif RUN_RECORD_TEMP.fullmatch(_name(record)):
                listing.run_temps.append(record)
    return listing


def write_output_file(target: str, storage: StorageConfig, data: bytes | str) -> str:
    """Write `data` (str: UTF-8) as the file `target` (a local path or URI), whole or not at all; returns
    `target`. Locally through a new file under a fresh hidden name in the same directory, renamed over the
    target: a link at the target is replaced by the file, and what it pointed to is never written. Object
    stores have no links and publish an object only once its upload completes: one PUT (or multipart upload)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fs, path = fsspec_filesystem(target, storage)
    if not is_local(target):
        with fs.open(path, "wb") as f:
            f.write(data)
        return target
    directory, name = os.path.split(path)
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


def first_foreign_entry(fs, path: str, output_path: str) -> str | None:
    """The name of something at the top of the output that the job does not write, or None (also when the
    output does not exist yet). Bounded: stops at the first one (a local directory is read entry by entry, an
    S3 prefix page by page); other object stores are listed whole."""
    if is_local(output_path):
        if not os.path.isdir(path):
            return None
        with os.scandir(path) as entries:
            return next((e.name for e in entries if not is_own_entry(e.name)), None)
    if hasattr(fs, "_iterdir") and hasattr(fs, "split_path"):  # s3fs: list_objects_v2 pages, one at a time
        from fsspec.asyn import sync

        bucket, key, _ = fs.split_path(path)
        prefix = f"{key.strip('/')}/" if key.strip("/") else ""

        async def scan():
            async for entry in fs._iterdir(bucket, prefix=prefix, delimiter="/"):
                name = _name(entry["name"])
                if name and f"{bucket}/{prefix}".rstrip("/") != entry["name"].rstrip("/") and not is_own_entry(name):
                    return name
            return None

        if not fs.exists(path):  # no bucket yet, or an empty prefix
            return None
        return sync(fs.loop, scan)
    listing = list_output(fs, path)
    return listing.foreign[0] if listing.foreign else None


def prepare_output(output: OutputConfig, storage: StorageConfig, run_id: str | None = None) -> None:
    """Check the output before anything runs, record the run, and without resume delete earlier results.

    Refuses (ConfigError, before anything is written or deleted) the outputs of `check_output_location`, and,
    unless `output.force`, a directory that holds anything the job does not write. Then: fails fast when the
    output cannot be written; removes files left half-written by a killed writer; writes the run's start record
    `_runs/<run_id>.json` (status "running"; `write_summary` replaces it at the end), so that the files of a run
    killed later are still known to be the job's; and with `resume: false` deletes the job's result files
    (`OutputListing.result_files`) and nothing else."""
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
        fs.makedirs(path, exist_ok=True)
        listing = list_output(fs, path)
        if listing.temps:
            fs.rm(listing.temps)  # left by a writer that was killed mid-file
        probe = _join(path, f"{WRITE_CHECK_PREFIX}{uuid.uuid4().hex}")
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
        if run_id is not None:
            record = {"run_id": run_id, "status": "running", "started_at": datetime.now(timezone.utc).isoformat()}
            record_run(output.path, storage, record)
        if not output.resume:
            old = listing.result_files
            if old:
                fs.rm(old)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"output {output.path} is not writable: {type(exc).__name__}: {exc}") from None


def record_run(output_path: str, storage: StorageConfig, record: dict) -> str:
    """Write `_runs/<run_id>.json` (replacing the run's earlier record)."""
    fs, path = fsspec_filesystem(output_path, storage)
    fs.makedirs(_join(path, RUNS_DIR), exist_ok=True)
    target = _join(_join(output_path, RUNS_DIR), f"{record['run_id']}.json")
    return write_output_file(target, storage, summary_text(record))


def write_summary(output_path: str, storage: StorageConfig, summary: dict) -> str:
    """The run's summary as `_runs/<run_id>.json` (replacing its start record) and `_summary.json`; returns
    where `_summary.json` went (a path in the output's filesystem)."""
    fs, path = fsspec_filesystem(output_path, storage)
    record_run(output_path, storage, summary)
    write_output_file(_join(output_path, SUMMARY_FILE), storage, summary_text(summary))
    return _join(path, SUMMARY_FILE)


def summary_text(record: dict) -> str:
    """A run record as JSON, with credentials in URIs (a config's endpoint, manifests, ids) `REDACTED`."""
    plain = json.loads(json.dumps(record, default=str))  # only JSON types left, so every string is seen
    return json.dumps(redact_value(plain), indent=2)
