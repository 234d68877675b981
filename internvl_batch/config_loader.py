"""YAML + command-line overrides -> `JobConfig`, with errors that fit on one line.

    load_config("configs/demo.yaml", ["generation.max_new_tokens=64", "model.dtype=bfloat16"])

Override values are parsed as YAML scalars/lists (`64` is an int, `true` a bool, `[1, 4]` a list, anything
else a string). Unknown keys, wrong types and missing fields all raise `ConfigError` naming the field.

Relative local paths written in a config file (`input.manifests`, `output.path`, `fetch.local_roots`, and
`model.path` when such a directory exists next to the file) are relative to the file's own directory, so a config works from any
working directory; paths given with `--set` are relative to the working directory, as on any command line.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from internvl_batch.config import JobConfig, PipelineConfig
from internvl_batch.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.field=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return [part for part in key.strip().split(".")], value


def apply_override(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part} is not a section")
        node = child
    node[path[-1]] = value


def format_validation_error(error: ValidationError, source: str) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key")
        else:
            parts.append(f"{where}: {item['msg']}")
    return f"{source}: invalid configuration: " + "; ".join(parts)


def config_from_dict(data: dict, source: str = "configuration", schema: type[PipelineConfig] = JobConfig) -> JobConfig:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def _relative_local(value, base: Path, must_exist: bool = False):
    """`value` joined to `base` when it is a relative local path (no URI scheme); anything else unchanged."""
    if not isinstance(value, str) or not value.strip() or "://" in value or Path(value).expanduser().is_absolute():
        return value
    joined = base / value
    return str(joined) if not must_exist or joined.exists() else value


def relative_to(loaded: dict, base: Path) -> dict:
    """A config file's relative local paths made relative to `base` (its directory)."""
    out = copy.deepcopy(loaded)
    sections = {name: out.get(name) for name in ("input", "output", "model", "fetch")}
    if isinstance(sections["input"], dict) and "manifests" in sections["input"]:
        manifests = sections["input"]["manifests"]
        sections["input"]["manifests"] = (
            [_relative_local(m, base) for m in manifests]
            if isinstance(manifests, list)
            else _relative_local(manifests, base)
        )
    roots = sections["fetch"].get("local_roots") if isinstance(sections["fetch"], dict) else None
    if isinstance(roots, list):
        sections["fetch"]["local_roots"] = [_relative_local(root, base) for root in roots]
    if isinstance(sections["output"], dict) and "path" in sections["output"]:
        sections["output"]["path"] = _relative_local(sections["output"]["path"], base)
    if isinstance(sections["model"], dict) and "path" in sections["model"]:  # "tiny" or a Hub id stay as they are
        sections["model"]["path"] = _relative_local(sections["model"]["path"], base, must_exist=True)
    return out


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    base: dict | None = None,
    schema: type[PipelineConfig] = JobConfig,
) -> JobConfig:
    """Read `path` (YAML), or start from `base`, apply `overrides`, validate (as a whole job's config, or as
    `PipelineConfig` for the Python API)."""
    data: dict = copy.deepcopy(base or {})  # overrides must not change the caller's dict
    source = "configuration"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {' '.join(str(exc).split())}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data.update(relative_to(loaded, Path(path).resolve().parent))
    for text in overrides or []:
        apply_override(data, *parse_override(text))
    return config_from_dict(data, source, schema)
