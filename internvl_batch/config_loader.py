"""YAML + command-line overrides -> `JobConfig`, with errors that fit on one line.

    load_config("configs/demo.yaml", ["generation.max_new_tokens=64", "model.dtype=bfloat16"])

Override values are parsed as YAML scalars/lists (`64` is an int, `true` a bool, `[1, 4]` a list, anything
else a string). Unknown keys, wrong types and missing fields all raise `ConfigError` naming the field, on one
line: an unknown key with the section's closest field name not given yet (`model.dtpye: unknown key (did you
mean `dtype`?)`), a pool size as what users write (an integer or a [min, max] pair), and an error in a value
that an override set named after the override (`--set resources.cpu_actors=...`), not the config file:
override values are never quoted (they can hold secrets).

Relative local paths written in a config file (`input.manifests`, `input.media`, `output.path`, `fetch.local_roots`, and
`model.path` when such a directory exists next to the file) are relative to the file's own directory, so a config works from any
working directory; paths given with `--set` are relative to the working directory, as on any command line.
"""

from __future__ import annotations

import copy
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from internvl_batch.config import JobConfig, PipelineConfig
from internvl_batch.errors import ConfigError
from internvl_batch.manifest.formats import AUTO, format_choices, format_names


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


PAIR_MESSAGE = "must be an integer (a fixed pool) or a [min, max] pair of integers"


def _model_of(annotation) -> type[BaseModel] | None:
    """The config section class an annotation holds (`X`, `X | None`), or None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _section(schema: type[BaseModel], path) -> type[BaseModel] | None:
    """The section class at `path` (field names from the top), or None where the path leaves the sections."""
    model = schema
    for part in path:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        model = _model_of(field.annotation) if field is not None else None
        if model is None:
            return None
    return model


def _pair_field(schema: type[BaseModel], loc: tuple) -> int:
    """The length of the prefix of `loc` that names a (min, max) pair field (`resources.cpu_actors`), or 0."""
    for end in range(1, len(loc) + 1):
        section = _section(schema, loc[: end - 1])
        field = section.model_fields.get(loc[end - 1]) if section is not None else None
        if field is not None and field.annotation == tuple[int, int]:
            return end
    return 0


def _suggestion(schema: type[BaseModel], data: dict, loc: tuple) -> str:
    """` (did you mean `x`?)` for an unknown key: the closest field name of its section not given already."""
    section = _section(schema, loc[:-1])
    node: Any = data
    for part in loc[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    given = set(node) if isinstance(node, dict) else set()
    names = [name for name in (section.model_fields if section else ()) if name not in given]
    match = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def _origin(loc: tuple, overrides: list[list[str]], source: str, unknown: bool) -> str:
    """Who set the value at `loc`: the last override whose key is `loc` or holds it (for an unknown key, also
    one under it: `--set modle.path=x` made the section `modle`), else `source`."""
    for path in reversed(overrides):
        key, shared = tuple(path), min(len(path), len(loc))
        if key == tuple(loc[: len(key)]) or (unknown and key[:shared] == tuple(loc[:shared])):
            return f"--set {'.'.join(path)}=..."
    return source


def format_validation_error(
    error: ValidationError,
    source: str,
    schema: type[BaseModel] = JobConfig,
    data: dict | None = None,
    overrides: list[list[str]] | None = None,
) -> str:
    """One line for every problem pydantic found, grouped by where the value came from (the config file or
    `source`, or an override); `data`: the validated dict (for what a section already has)."""
    return format_problems(error.errors(), source, schema, data, overrides)


def registry_problems(data: dict, schema: type[BaseModel] = JobConfig) -> list[dict]:
    """The problems pydantic cannot see, in its error dicts' shape: values that must name a registered thing
    (`config` may not import the registries above it). Now: `input.format`, a manifest format's name."""
    section = data.get("input") if "input" in schema.model_fields else None
    value = section.get("format") if isinstance(section, dict) else None
    if isinstance(value, str) and value != AUTO and value not in format_names():
        return [{"loc": ("input", "format"), "type": "value_error", "msg": f"must be {format_choices()}"}]
    return []


def format_problems(
    problems: list[dict],
    source: str,
    schema: type[BaseModel] = JobConfig,
    data: dict | None = None,
    overrides: list[list[str]] | None = None,
) -> str:
    """`format_validation_error` for a list of pydantic-shaped error dicts (loc, type, msg)."""
    groups: dict[str, list[str]] = {}
    for item in problems:
        loc = tuple(item["loc"])
        pair = _pair_field(schema, loc)
        if pair and item["type"] != "value_error":  # a wrong shape or type, not the validator's own check
            loc, message = loc[:pair], PAIR_MESSAGE
        elif item["type"] == "extra_forbidden":
            message = "unknown key" + _suggestion(schema, data or {}, loc)
        else:  # a validator's own message, without pydantic's "Value error, " prefix
            message = item["msg"].removeprefix("Value error, ")
        text = f"{'.'.join(str(p) for p in loc) or '(top level)'}: {message}"
        unknown = item["type"] == "extra_forbidden"
        parts = groups.setdefault(_origin(loc, overrides or [], source, unknown), [])
        if text not in parts:
            parts.append(text)
    ordered = sorted(groups.items(), key=lambda group: group[0] != source)  # the file's (or base's) first
    return "; ".join(
        f"{origin}: {'invalid configuration: ' if index == 0 else ''}{'; '.join(parts)}"
        for index, (origin, parts) in enumerate(ordered)
    )


def config_from_dict(
    data: dict,
    source: str = "configuration",
    schema: type[PipelineConfig] = JobConfig,
    overrides: list[list[str]] | None = None,
) -> JobConfig:
    """Validate `data`; `overrides`: the keys set by overrides, so that their errors are named after them."""
    problems = registry_problems(data, schema)
    try:
        config = schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_problems([*exc.errors(), *problems], source, schema, data, overrides)) from None
    if problems:
        raise ConfigError(format_problems(problems, source, schema, data, overrides))
    return config


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
    for key in ("manifests", "media"):
        if isinstance(sections["input"], dict) and key in sections["input"]:
            paths = sections["input"][key]
            sections["input"][key] = (
                [_relative_local(m, base) for m in paths] if isinstance(paths, list) else _relative_local(paths, base)
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
    keys = []
    for text in overrides or []:
        key, value = parse_override(text)
        apply_override(data, key, value)
        keys.append(key)
    return config_from_dict(data, source, schema, keys)
