"""Set-ups the unit tests share: a job's config, request rows as the read stage makes them, and those rows
through the CPU stage (`PrepareStage`), without Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from internvl_batch.config import GenerationConfig, JobConfig, TaskConfig
from internvl_batch.config_loader import load_config
from internvl_batch.done_keys import ANY_RESULT, DoneRule, ResultKeys, build_result_keys
from internvl_batch.manifest.requests import TaskAssigner
from internvl_batch.manifest.rows import MediaResolver, parse_row
from internvl_batch.stages.prepare import PrepareStage
from internvl_batch.stages.read import request_row, requests_table
from internvl_batch.tasks import TaskPrompter


def job_config(model_path: str | Path, output_path: str | Path, /, **sections: dict) -> JobConfig:
    """A job's config as `load_config` makes it from a file that reads manifest `m.jsonl` with the model at
    `model_path` into `output_path`; `sections` add to it, e.g. `generation={"max_new_tokens": 4}` (an `input`,
    `output` or `model` given is merged into those: `input={"manifests": "d/"}` replaces the manifest)."""
    base = {"input": {"manifests": "m.jsonl"}, "output": {"path": str(output_path)}, "model": {"path": str(model_path)}}
    for name, values in sections.items():
        base[name] = base.get(name, {}) | values
    return load_config(None, base=base)


def request_table(
    raw_rows: list[dict],
    manifest: str,
    config: JobConfig | None = None,
    passthrough_types: dict[str, object] | None = None,
) -> pa.Table:
    """Request rows as the read stage makes them from the manifest `manifest` holding `raw_rows` (checked,
    tasks assigned by `config`'s task section, the defaults without a config, media resolved against the
    manifest, `source` = `<manifest>:<line>`), carrying the columns of `passthrough_types` (name -> Arrow type;
    default: `label` as text)."""
    types = {"label": pa.string()} if passthrough_types is None else passthrough_types
    task, generation = (config.task, config.generation) if config else (TaskConfig(), GenerationConfig())
    assign = TaskAssigner(TaskPrompter(task, generation.max_new_tokens))
    rows = []
    for number, raw in enumerate(raw_rows, start=1):
        parsed, tasks = assign(parse_row(raw, f"m.jsonl:{number}"))
        rows.append(request_row(parsed, tasks, raw, f"{manifest}:{number}", MediaResolver(manifest), types))
    return requests_table(rows, types)


def prepare_rows(config: JobConfig, raw_rows: list[dict], manifest: str) -> pa.Table:
    """`raw_rows` (the manifest `manifest`'s) as `request_table` makes them, through `PrepareStage` built from
    `config`: all its output in one table."""
    return pa.concat_tables(PrepareStage.from_config(config)(request_table(raw_rows, manifest, config)))


def result_keys(hashes: np.ndarray, rule: DoneRule = ANY_RESULT) -> ResultKeys:
    """`ResultKeys` of ok results of these keys (uint64 [n, 2]), made from no particular media version or
    config (what an output written before versions and fingerprints holds)."""
    state = np.zeros((len(hashes), 4), np.uint64)
    state[:, 2] = 1  # ok
    return build_result_keys([np.concatenate([hashes, state], axis=1)], [], rule)
