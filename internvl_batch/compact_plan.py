"""A compaction's plan (`.internvl-batch/compaction.json`, written whole or not at all) and its last step: the
old files removed in name order, the run recorded, the plan dropped (`compact.py` has the protocol)."""

from __future__ import annotations

import json
import os
import posixpath
import time
from datetime import datetime, timezone

from internvl_batch.config import StorageConfig
from internvl_batch.output_dir import record_run, write_output_file
from internvl_batch.output_layout import COMPACTION_FILE, META_DIR, RESULT_FILE

PAUSE_ENV = "INTERNVL_BATCH_COMPACT_PAUSE"  # tests: stop at a point ("written", "removing") to be killed there


def finish_plan(fs, path: str, output_path: str, storage: StorageConfig, plan: dict) -> dict:
    """Remove the old files in name order (see the module's docstring), record the compaction, drop the plan."""
    for name in sorted(plan["old"], key=posixpath.basename):
        if fs.exists(f"{path}/{name}"):
            fs.rm(f"{path}/{name}")
            pause("removing")
    summary = {"run_id": plan["run_id"], "files_before": len(plan["old"]), "files_after": len(plan["new"])}
    summary.update(rows_kept=plan["rows_kept"], rows_dropped=plan["rows_dropped"])
    finished = datetime.now(timezone.utc).isoformat()
    record_run(output_path, storage, {**plan["record"], "status": "compacted", "finished_at": finished, **summary})
    fs.rm(f"{path}/{META_DIR}/{COMPACTION_FILE}")  # last: until here a rerun redoes the removals
    return summary


def read_plan(fs, path: str) -> dict | None:
    try:  # written whole or not at all (`write_output_file`)
        with fs.open(f"{path}/{META_DIR}/{COMPACTION_FILE}", "r") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write_plan(output_path: str, storage: StorageConfig, plan: dict) -> None:
    write_output_file(f"{output_path.rstrip('/')}/{META_DIR}/{COMPACTION_FILE}", storage, json.dumps(plan, indent=1))


def written_by(name: str, run_id: str) -> bool:
    """Whether a name in data/ is a result file of `run_id`, or one being written when a writer was killed."""
    match = RESULT_FILE.fullmatch(name)
    return bool(match and match[1] == run_id) or (name.startswith(f".part-{run_id}-") and name.endswith(".tmp"))


def pause(point: str) -> None:
    """A test's hook: with PAUSE_ENV set to `point`, announce it on stdout and wait there to be killed."""
    if os.environ.get(PAUSE_ENV) == point:
        print(f"compaction paused at {point}", flush=True)
        while True:
            time.sleep(3600)
