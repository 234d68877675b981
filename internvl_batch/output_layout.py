"""The layout of an output directory (`output.path`, OUT below): its names, which files are the job's, one listing.

    OUT/data/part-<run_id>-<12 hex>.parquet   result files: the dataset (point Parquet readers here)
    OUT/.internvl-batch/summary.json          the last run's summary
    OUT/.internvl-batch/runs/<run_id>.json    every run: written when it starts (status "running"), its summary at the end
    OUT/.internvl-batch/report.html           the report (`output.report`; `internvl-batch report`'s default)
    OUT/.internvl-batch/orphans.arrow         keys of results whose input the latest run no longer read
    OUT/.internvl-batch/compaction.json       while a compaction runs (`compact.py`): its plan, for a rerun to finish it

Why two folders: tools pointed at a directory read what they find there. polars reads every non-empty file under
it, hidden ones included, and refuses mixed extensions; `datasets.load_dataset` picks the format by a vote of
file extensions (a run record or two outvote one result file). So `data/` holds result files and nothing else:
pyarrow.dataset, pandas, polars, duckdb, `datasets.load_dataset` and `ray.data.read_parquet` pointed at OUT/data
read exactly the results. Pointed at OUT, all but polars do too (they skip hidden names or go by the `.parquet`
extension); polars needs OUT/data (or 'OUT/**/*.parquet').

The legacy layout (before issue 27) kept result files, `_summary.json`, `_runs/<run_id>.json` and `report.html`
at OUT's top. `list_output` sees both layouts, so reading (`results.read_results`, the report, resume) works on an
output written by either, or half moved from one to the other (a file in both places counts once: its copy
in the current layout); `output_dir.prepare_output` moves a legacy output into this layout when a run starts.

Which files are the job's (reading, resuming and `resume: false`, which deletes result files, agree on this):
names the job gives, in the folder where it puts them (`OWN`). Result files are those named exactly as the job
names them whose run is recorded in a run record (either layout's); files of an unrecorded run (a run killed
before run records were written at its start) count too while the output holds nothing but the job's own kinds
of files (`OutputListing.foreign` empty). Anything else, at the top or inside `data/` or `.internvl-batch/`, is
someone else's: never read as results, never deleted, and without `output.force` a reason to refuse the output.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field

DATA_DIR = "data"
META_DIR = ".internvl-batch"
SUMMARY_FILE = "summary.json"  # in META_DIR, as are the three below
RUNS_DIR = "runs"
REPORT_FILE = "report.html"
COMPACTION_FILE = "compaction.json"
ORPHANS_FILE = "orphans.arrow"  # the latest scan's results whose input is gone (`results.orphan_keys`)
LEGACY_SUMMARY_FILE = "_summary.json"  # at the top, as are the two below
LEGACY_RUNS_DIR = "_runs"
LEGACY_REPORT_FILE = "report.html"
WRITE_CHECK_PREFIX = "_write_check_"
RUN_ID = r"\d{8}T\d{12}Z-[0-9a-f]{6}"  # `output_dir.new_run_id`
RESULT_FILE = re.compile(rf"part-({RUN_ID})-[0-9a-f]{{12}}\.parquet")
RUN_RECORD = re.compile(rf"({RUN_ID})\.json")
# Temporary names of files being written (`output_dir.write_output_file`: `.<name>.<12 hex>.tmp`), per folder;
# `.part-*.tmp` also covers the temporary result files of earlier versions.
RUN_RECORD_TEMP = re.compile(rf"\.{RUN_ID}\.json\.[0-9a-f]{{12}}\.tmp")  # in either layout's runs folder
RESULT_TEMP = re.compile(r"\.part-.*\.tmp")
META_TEMP = re.compile(r"\.(summary\.json|report\.html|compaction\.json|orphans\.arrow)\.[0-9a-f]{12}\.tmp")
LEGACY_TEMP = re.compile(r"\.(part-.*|_summary\.json\.[0-9a-f]{12}|report\.html\.[0-9a-f]{12})\.tmp")
TOP = ""  # the folder key of OUT's top (in `TEMPS`, `OWN`, `OutputListing.folders`)
TEMPS = {TOP: LEGACY_TEMP, DATA_DIR: RESULT_TEMP, META_DIR: META_TEMP}


def is_own_entry(name: str) -> bool:
    """Whether a name at the top of an output is one the job writes there: the two folders, and the legacy
    layout's names (result files, summary, run records, report, files being written), the write check."""
    return bool(
        name in (DATA_DIR, META_DIR, LEGACY_SUMMARY_FILE, LEGACY_RUNS_DIR, LEGACY_REPORT_FILE)
        or RESULT_FILE.fullmatch(name)
        or name.startswith(WRITE_CHECK_PREFIX)
        or LEGACY_TEMP.fullmatch(name)
    )


def _own_in_data(name: str) -> bool:
    return bool(RESULT_FILE.fullmatch(name) or RESULT_TEMP.fullmatch(name))


def _own_in_meta(name: str) -> bool:
    return bool(
        name in (SUMMARY_FILE, RUNS_DIR, REPORT_FILE, COMPACTION_FILE, ORPHANS_FILE)
        or name.startswith(WRITE_CHECK_PREFIX)
        or META_TEMP.fullmatch(name)
    )


# Per folder (its name under OUT; TOP: OUT itself): whether a name there is one the job writes.
OWN = {TOP: is_own_entry, DATA_DIR: _own_in_data, META_DIR: _own_in_meta}


def _join(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}" if name else path


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def data_path(output_path: str | os.PathLike) -> str:
    """Where the result files are: the path to give Parquet readers (a URI for an object-store output)."""
    return _join(os.fspath(output_path), DATA_DIR)


def _meta(output_path: str | os.PathLike, name: str) -> str:
    return _join(_join(os.fspath(output_path), META_DIR), name)


def summary_path(output_path: str | os.PathLike) -> str:
    return _meta(output_path, SUMMARY_FILE)


def orphans_path(output_path: str | os.PathLike) -> str:
    return _meta(output_path, ORPHANS_FILE)


def runs_path(output_path: str | os.PathLike) -> str:
    return _meta(output_path, RUNS_DIR)


def run_record_path(output_path: str | os.PathLike, run_id: str) -> str:
    return _join(runs_path(output_path), f"{run_id}.json")


def report_path(output_path: str | os.PathLike) -> str:
    return _meta(output_path, REPORT_FILE)


@dataclass
class OutputListing:
    """An output directory as the job sees it: its top, `data/`, `.internvl-batch/` and both runs folders."""

    exists: bool = False  # whether the output directory exists
    folders: dict[str, dict[str, dict]] = field(default_factory=dict)  # TOP/DATA_DIR/META_DIR -> name -> fsspec info
    records: dict[str, dict] = field(default_factory=dict)  # run id -> info of its record in `.internvl-batch/runs/`
    legacy_records: dict[str, dict] = field(default_factory=dict)  # run id -> info of its record in `_runs/`
    run_temps: list[str] = field(default_factory=list)  # run records a killed writer left half-written

    def entry(self, folder: str, name: str) -> dict | None:
        """The fsspec info (`name`: its path, `size`, `type`) of `name` in `folder`, or None."""
        return self.folders.get(folder, {}).get(name)

    @property
    def runs(self) -> set[str]:
        """Run ids with a record, in either layout."""
        return set(self.records) | set(self.legacy_records)

    @property
    def record_files(self) -> dict[str, str]:
        """Run id -> path of its record (the current layout's where both layouts hold one), by run id."""
        merged = {**self.legacy_records, **self.records}
        return {run: merged[run]["name"] for run in sorted(merged)}

    @property
    def temps(self) -> list[str]:
        """Files left half-written by a killed writer."""
        found = [
            info["name"]
            for folder, pattern in TEMPS.items()
            for name, info in self.folders.get(folder, {}).items()
            if pattern.fullmatch(name)
        ]
        return found + self.run_temps

    @property
    def foreign(self) -> list[str]:
        """Names the job does not write, as paths under the output (`notes.txt`, `data/mine.parquet`)."""
        return sorted(
            _join(folder, name) if folder else name
            for folder, own in OWN.items()
            for name in self.folders.get(folder, {})
            if not own(name)
        )

    def _result_entries(self, folder: str) -> dict[str, dict]:
        anything_else = bool(self.foreign)
        runs = self.runs
        return {
            name: info
            for name, info in self.folders.get(folder, {}).items()
            if (match := RESULT_FILE.fullmatch(name))
            and info.get("type") != "directory"
            and (match[1] in runs or not anything_else)
        }

    @property
    def result_files(self) -> list[str]:
        """The job's result files (see the module's docstring), in both layouts, sorted by name; a file in both
        `data/` and the top (a move cut short) is its copy in `data/`."""
        files = {name: info["name"] for name, info in self._result_entries(TOP).items()}
        files.update({name: info["name"] for name, info in self._result_entries(DATA_DIR).items()})
        return [files[name] for name in sorted(files)]

    @property
    def legacy_result_files(self) -> dict[str, dict]:
        """The job's result files at the top (legacy layout): name -> info."""
        return self._result_entries(TOP)

    @property
    def summary_file(self) -> str | None:
        """The path of the last run's summary: the current layout's, else the legacy one, else None."""
        info = self.entry(META_DIR, SUMMARY_FILE) or self.entry(TOP, LEGACY_SUMMARY_FILE)
        return info["name"] if info else None

    @property
    def is_legacy(self) -> bool:
        """Whether anything of the job's is still where the legacy layout put it."""
        top = self.folders.get(TOP, {})
        legacy_names = (LEGACY_SUMMARY_FILE, LEGACY_RUNS_DIR, LEGACY_REPORT_FILE)
        return bool(self.legacy_records or self.legacy_result_files or any(name in top for name in legacy_names))

    def describe(self) -> str:
        """What an output without result files holds, in a few words, for messages."""
        named = sum(bool(RESULT_FILE.fullmatch(n)) for folder in (TOP, DATA_DIR) for n in self.folders.get(folder, {}))
        found = [
            f"{len(self.runs)} run record(s)" if self.runs else "",
            "a run summary" if self.summary_file else "",
            "a report" if self.entry(META_DIR, REPORT_FILE) or self.entry(TOP, LEGACY_REPORT_FILE) else "",
            f"{named} result file(s) of unrecorded runs next to files the job did not write" if named else "",
            f"files the job does not write: {', '.join(self.foreign[:3])}{', ...' if self.foreign[3:] else ''}"
            if self.foreign
            else "",
        ]
        found = [text for text in found if text]
        return (
            f"found {'; '.join(found)}" if found else "only empty folders" if self.folders.get(TOP) else "it is empty"
        )


def _ls(fs, directory: str) -> dict[str, dict]:
    """name -> fsspec info of a directory's entries (fresh, not from a filesystem's cache: other processes
    write there)."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(directory)
    top = directory.rstrip("/")
    try:
        infos = fs.ls(directory, detail=True)
    except FileNotFoundError:  # a prefix whose only object was just deleted (a versioned bucket's delete marker)
        return {}
    finally:  # nor left in the cache: a Ray worker that lists here lives on, and s3fs opens by the cached listing
        with contextlib.suppress(Exception):
            fs.invalidate_cache(directory)
    return {_name(info["name"]): info for info in infos if info["name"].rstrip("/") != top and _name(info["name"])}


def list_output(fs, path: str) -> OutputListing:
    """One listing of each of the output's folders that exist (`path`: the output in `fs`)."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
    if not fs.isdir(path):
        return OutputListing()
    listing = OutputListing(exists=True, folders={TOP: _ls(fs, path)})
    for folder in (DATA_DIR, META_DIR):
        info = listing.entry(TOP, folder)
        if info and info.get("type") == "directory":
            listing.folders[folder] = _ls(fs, info["name"])
    for records, info in (
        (listing.records, listing.entry(META_DIR, RUNS_DIR)),
        (listing.legacy_records, listing.entry(TOP, LEGACY_RUNS_DIR)),
    ):
        if info and info.get("type") == "directory":
            for name, record in _ls(fs, info["name"]).items():
                if match := RUN_RECORD.fullmatch(name):
                    records[match[1]] = record
                elif RUN_RECORD_TEMP.fullmatch(name):
                    listing.run_temps.append(record["name"])
    return listing
