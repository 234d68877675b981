"""What made a result: the config fingerprint, and what a run does with results made by another config.

A result row's `config_fingerprint` is a hash of everything that decides its answer, for its task:

- the model's identity: each config, tokenizer and weight file's name and size, and its content: an object
  store's ETag, or a hash of the first and last MiB of a local file (a fine-tune of the same shape differs
  there; reading whole checkpoints at every start would not do); a Hub snapshot's revision; `model.dtype`;
- the checkpoint's system message, the task's prompt (its question built from a probe row, so a changed
  preset, `task.prompts`, template, JSON schema or instruction shows) and token limit;
- generation settings (`generation`: limits, sampling, seed) and pixel settings (`preprocess`: tiling, EXIF,
  mode; `video`: frames and decoder; `prompt.escape_special_tokens`).

A setting added to the fingerprint after results carried one (`LATER_PARTS`) is hashed only when it differs
from the value that gives what runs before it gave: an upgrade alone never stops an output's next run.

Settings that change speed only (batching, engine, actors, timeouts) are not in it. The run record
(`.internvl-batch/runs/<run_id>.json`, `config_fingerprint`) keeps the parts, so a later run can name the
settings that changed (`changed_settings`).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path

from internvl_batch.config import JobConfig, StorageConfig
from internvl_batch.done_keys import DoneRule, text_hashes
from internvl_batch.errors import ConfigChanged, TaskError
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.output_layout import list_output
from internvl_batch.tasks import TASKS, TaskPrompter, template_fields

MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".bin", ".tiktoken")
SAMPLE_BYTES = 2**20  # read from each end of a local model file
GENERATION = (
    "max_new_tokens",
    "max_input_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "min_new_tokens",
)
PREPROCESS = (
    "max_num",
    "min_num",
    "use_thumbnail",
    "exif_transpose",
    "mode",
    "max_pixels",
    "max_pages",
    "multi_image_max_num",
)
VIDEO = ("num_segments", "max_segments")
# Settings added to the fingerprint later -> the value that gives earlier runs' answers (not hashed when equal).
# video.decoder: decord and PyAV give the same frames and pixels except for 10-bit video (BENCHMARKS.md), and
# `auto` is PyAV; a run that asks for decord gets its own fingerprint.
LATER_PARTS = {"video.decoder": "pyav"}


def video_decoder(config: JobConfig) -> str:
    """The decoder video rows are decoded with: `auto` is PyAV."""
    return "decord" if config.video.decoder == "decord" else "pyav"


@dataclass(frozen=True)
class RunFingerprint:
    tasks: dict[str, str]  # task -> fingerprint (what result rows carry)
    parts: dict[str, str]  # setting -> its value or hash (the common ones, then `task.<name>.*`)

    def record(self) -> dict:
        return {"tasks": self.tasks, "parts": self.parts}


def _digest(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def model_identity(model_path: str, local_dir: Path, storage: StorageConfig) -> str:
    """A hash of the model's files (names, sizes, content markers; see the module docstring)."""
    if model_path.split("://", 1)[0] in ("s3", "gs", "gcs", "az", "abfs"):
        fs, path = fsspec_filesystem(model_path, storage)
        listed = fs.find(path, detail=True)
        files = [
            (posixpath.relpath(name, path), int(info.get("size") or 0), str(info.get("ETag") or info.get("etag") or ""))
            for name, info in sorted(listed.items())
            if name.endswith(MODEL_FILE_SUFFIXES)
        ]
        return _digest(files)
    files = []
    for file in sorted(p for p in local_dir.rglob("*") if p.is_file() and p.name.endswith(MODEL_FILE_SUFFIXES)):
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(SAMPLE_BYTES)
            f.seek(max(0, size - SAMPLE_BYTES))
            tail = f.read(SAMPLE_BYTES)
        files.append((str(file.relative_to(local_dir)), size, hashlib.blake2b(head + tail, digest_size=12).hexdigest()))
    parts = local_dir.resolve().parts
    revision = parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else ""  # a Hub snapshot
    return _digest([revision, files])


def _task_prompt(prompter: TaskPrompter, task: str, template: str | None) -> str:
    """The task's question for a probe row whose fields are placeholders: the prompt's shape, as words."""
    probe = {"question": "{question}", "expression": "{expression}"}
    probe |= {name: "{" + name + "}" for name in template_fields(template)}
    try:
        return prompter.question(task, probe)
    except (TaskError, ValueError, KeyError) as exc:
        return f"unavailable: {exc}"


def run_fingerprint(config: JobConfig, local_dir: Path, system_message: str | None) -> RunFingerprint:
    """The run's fingerprint per task (`TASKS`: rows may name any of them), from its config and the model's
    files (`local_dir`: the checkpoint as resolved on the driver)."""
    common = {
        "model.files": model_identity(config.model.path, local_dir, config.storage),
        "model.dtype": config.model.dtype,
        "system_message": system_message or "",
        "prompt.escape_special_tokens": config.prompt.escape_special_tokens,
    }
    common |= {f"generation.{k}": getattr(config.generation, k) for k in GENERATION}
    common |= {f"preprocess.{k}": getattr(config.preprocess, k) for k in PREPROCESS}
    common |= {f"video.{k}": getattr(config.video, k) for k in VIDEO}
    later = {"video.decoder": video_decoder(config)}
    hashed = common | {name: value for name, value in later.items() if value != LATER_PARTS[name]}
    prompter = TaskPrompter(config.task, config.generation.max_new_tokens)
    parts = {name: str(value) for name, value in (common | later).items()}
    tasks = {}
    for task in TASKS:
        own = {
            f"task.{task}.prompt": _task_prompt(prompter, task, config.task.template),
            f"task.{task}.max_new_tokens": str(prompter.max_new_tokens(task)),
        }
        parts |= own
        tasks[task] = _digest({**hashed, **own})
    return RunFingerprint(tasks, parts)


def run_records(output_path: str, storage: StorageConfig) -> list[dict]:
    """The output's run records (JSON objects; unreadable ones skipped), oldest first. A few KB each."""
    fs, path = fsspec_filesystem(output_path, storage)
    records = []
    for file in list_output(fs, path).record_files.values():
        try:
            with fs.open(file, "r") as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def done_rule(config: JobConfig, fingerprint: RunFingerprint, records: list[dict]) -> DoneRule:
    """How this run judges earlier results (`done_keys`): its own fingerprints, those earlier `keep` runs
    accepted (not under `reprocess`), and `output.retry_errors`."""
    choice = config.output.on_config_change
    accepted = {int(h) for r in records for h in r.get("accepted_fingerprints") or []}
    return DoneRule(
        current=fingerprint.tasks,
        accepted=frozenset() if choice == "reprocess" else frozenset(accepted),
        retry_errors=config.output.retry_errors,
        keep=choice == "keep",
    )


def changed_settings(stale: frozenset[int], fingerprint: RunFingerprint, records: list[dict]) -> list[str]:
    """The settings that differ between this run and the runs whose fingerprints (hashes: `stale`) made results
    it does not accept; `(unrecorded)` for results without a fingerprint or whose run left no parts."""
    changed: set[str] = set()
    for record in records:
        made = (record.get("config_fingerprint") or {}).get("tasks") or {}
        hashes = dict(zip(made, text_hashes(list(made.values()))))
        if not any(int(h) in stale for h in hashes.values()):
            continue
        parts = (record.get("config_fingerprint") or {}).get("parts") or {}
        tasks = {t for t, h in hashes.items() if int(h) in stale}
        for name in fingerprint.parts.keys() | parts.keys():
            own = name.startswith("task.") and name.split(".")[1] not in tasks
            theirs = parts.get(name, LATER_PARTS.get(name))  # a record older than the part: its default
            if not own and theirs != fingerprint.parts.get(name):
                changed.add(name)
        stale = stale - {int(h) for h in hashes.values()}
    if stale:
        changed.add("(unrecorded: results written before fingerprints, or by a run without a record)")
    return sorted(changed)


def check_config_change(config: JobConfig, scan, fingerprint: RunFingerprint, records: list[dict]) -> frozenset[int]:
    """After the scan (`scan.totals.stale_keys`, each unit's `stale_configs`): under `on_config_change: error`,
    raise `ConfigChanged` (exit 2) when rows read have results made with another config, naming the settings
    that changed; otherwise return those fingerprints' hashes (a `keep` run records them as accepted)."""
    stale = frozenset().union(*(unit.stale_configs for unit in scan.units)) if scan.units else frozenset()
    if not scan.totals.stale_keys:
        return frozenset()
    if config.output.on_config_change == "error":
        changed = changed_settings(stale, fingerprint, records)
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise ConfigChanged(
            f"{scan.totals.stale_keys} results in {config.output.path} of the rows read were made with another "
            f"config (changed: {shown}); set output.on_config_change=reprocess to do them again with this one, "
            "or keep to keep them (and do only rows without a result)"
        )
    return stale
