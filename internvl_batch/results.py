"""The output directory: check it before work, read results back, write `_summary.json`.

Parquet readers skip files whose names start with `_` or `.`, so `_summary.json` and probes never look like
results.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pyarrow as pa

from internvl_batch.config import OutputConfig, StorageConfig
from internvl_batch.errors import ConfigError
from internvl_batch.storage import fsspec_filesystem, pyarrow_filesystem

SUMMARY_FILE = "_summary.json"


def result_files(output: OutputConfig, storage: StorageConfig) -> list[str]:
    fs, path = fsspec_filesystem(output.path, storage)
    if not fs.exists(path):
        return []
    return sorted(p for p in fs.find(path) if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith(("_", ".")))


def prepare_output(output: OutputConfig, storage: StorageConfig) -> None:
    """Fail fast when the output cannot be written or already holds results (unless overwrite)."""
    fs, path = fsspec_filesystem(output.path, storage)
    existing = result_files(output, storage)
    if existing and not output.overwrite:
        raise ConfigError(
            f"output {output.path} already holds {len(existing)} result files; choose another path or set "
            "output.overwrite=true to replace them"
        )
    try:
        for file in existing:
            fs.rm(file)
        fs.makedirs(path, exist_ok=True)
        probe = f"{path.rstrip('/')}/_write_check_{uuid.uuid4().hex}"
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"output {output.path} is not writable: {type(exc).__name__}: {exc}") from None


def read_output_columns(output: OutputConfig, storage: StorageConfig, columns: list[str]) -> pa.Table:
    import pyarrow.dataset as pads

    files = result_files(output, storage)
    if not files:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    fs, _ = pyarrow_filesystem(output.path, storage)
    return pads.dataset(files, filesystem=fs, format="parquet").to_table(columns=columns)


def summarize(table: pa.Table, input_ids: list[str], wall_time_s: float) -> dict:
    """Counts and rates over the written rows; checks one output row per input row."""
    ids = table.column("id").to_pylist()
    statuses = table.column("status").to_pylist()
    errors = [e for e in table.column("error").to_pylist() if e]
    ok = [i for i, s in enumerate(statuses) if s == "ok"]
    media = table.column("media").to_pylist()
    tiles = table.column("num_tiles").to_pylist()
    out_tokens = table.column("num_output_tokens").to_pylist()
    images = sum(len(media[i] or []) for i in ok)
    tokens = sum(out_tokens[i] or 0 for i in ok)
    missing = set(input_ids) - set(ids)
    extra = Counter(ids) - Counter(input_ids)
    wall = max(wall_time_s, 1e-9)
    return {
        "rows_input": len(input_ids),
        "rows_output": len(ids),
        "rows_ok": len(ok),
        "rows_failed": len(ids) - len(ok),
        "one_row_per_input": not missing and not extra,
        "missing_ids": sorted(missing)[:10],
        "errors_by_stage": dict(Counter(e.split(":", 1)[0] for e in errors)),
        "images": images,
        "tiles": sum(sum(tiles[i] or []) for i in ok),
        "output_tokens": tokens,
        "wall_time_s": round(wall_time_s, 3),
        "rows_per_s": round(len(ids) / wall, 3),
        "images_per_s": round(images / wall, 3),
        "output_tokens_per_s": round(tokens / wall, 3),
    }


def write_summary(output: OutputConfig, storage: StorageConfig, summary: dict) -> str:
    fs, path = fsspec_filesystem(output.path, storage)
    target = f"{path.rstrip('/')}/{SUMMARY_FILE}"
    with fs.open(target, "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return target
