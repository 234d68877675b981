"""Finding the manifest files a pattern in `input.manifests` stands for (a listing: cheap, on the driver).

A pattern is one of:

- a file: itself;
- a glob (`*`, `?`, `[`): the files it matches, sorted;
- a brace range or list, as WebDataset and img2dataset name shards (`shard-{000000..000009}.tar`,
  `{train,test}.parquet`): every name it expands to, in expansion order; each must exist (a missing shard
  stops the job, naming it, rather than quietly processing part of a dataset). A range keeps the zero padding
  of its ends, as `braceexpand` (what `webdataset` uses) does;
- a folder, read by what it holds:
  - a Hugging Face `save_to_disk` folder (`state.json` beside `data-00000-of-00001.arrow`): the Arrow files
    `state.json` lists, in its order (not the `cache-*.arrow` files `datasets` may leave there);
    a `DatasetDict` folder (`dataset_dict.json`, one folder per split) is refused, naming its splits;
  - otherwise the manifest files directly in it (those whose suffix a registered format lists for folders:
    `.parquet`, `.arrow`, `.jsonl`, `.csv`, `.tar`, ...; `manifest.formats`), except a format's metadata beside
    its files (`metadata_beside`: the Parquet img2dataset writes beside each tar shard, `00000.parquet` next to
    `00000.tar`);
  - with none there but a `data/` folder (a Hugging Face Hub dataset repository as `datasets` lays it out:
    README.md, `data/train-00000-of-00002.parquet`, ...): the manifest files anywhere below `data/`, sorted
    (every split found there is read; the log names them);
  - a folder with none of these is an error that says what it holds.
"""

from __future__ import annotations

import itertools
import json
import logging
import posixpath
import re
from collections import Counter

from internvl_batch.errors import ConfigError
from internvl_batch.filesystems import SUPPORTED_SCHEMES, fsspec_filesystem, scheme_of
from internvl_batch.manifest.formats import format_for_suffix, listed_suffixes, manifest_suffix, registered

log = logging.getLogger("internvl_batch.manifest")

GLOB_CHARS = "*?["
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def brace_expand(pattern: str) -> list[str]:
    """`a{1..3}b` -> a1b a2b a3b; `{x,y}` -> x y; several groups multiply, left to right. A range keeps the
    width of its ends when one is zero-padded (`{000..010}`); `{}` and groups without `,` or `..` are kept as
    written (a name may hold braces). Nested braces are not expanded."""
    pieces: list[list[str]] = []
    last = 0
    for match in _BRACE.finditer(pattern):
        body = match.group(1)
        numbers = _RANGE.match(body)
        if numbers:
            first, end = numbers.groups()
            step = 1 if int(end) >= int(first) else -1
            padded = any(s.startswith(("0", "-0")) for s in (first, end) if s not in ("0", "-0"))
            width = max(len(first), len(end)) if padded else 0  # braceexpand's rule
            options = [str(n).zfill(width) for n in range(int(first), int(end) + step, step)]
        elif "," in body:
            options = body.split(",")
        else:
            continue
        pieces += [[pattern[last : match.start()]], options]
        last = match.end()
    if not pieces:
        return [pattern]
    pieces.append([pattern[last:]])
    return ["".join(parts) for parts in itertools.product(*pieces)]


def find_manifests(pattern: str, storage) -> list[tuple[str, int]]:
    """(path as fsspec names it, size) of every manifest file `pattern` stands for (see the module docstring);
    raises `ConfigError` naming the pattern when there is none, or when a listing fails."""
    scheme = scheme_of(pattern)
    if scheme and scheme not in SUPPORTED_SCHEMES:
        raise ConfigError(f"manifest {pattern}: unsupported URI scheme {scheme!r}")
    fs, path = fsspec_filesystem(pattern, storage)
    try:
        expanded = brace_expand(path)
        if len(expanded) > 1 or expanded[0] != path:
            return _shards(fs, expanded, pattern)
        if any(c in path for c in GLOB_CHARS):
            matches = sorted(
                (p, int(i.get("size") or 0))
                for p, i in fs.glob(path, detail=True).items()
                if i.get("type") != "directory"
            )
            if not matches:
                raise ConfigError(f"manifest {pattern}: no file matches the pattern")
            return matches
        info = fs.info(path) if fs.exists(path) else None
        if info is None:
            raise ConfigError(f"manifest {pattern}: no such file")
        if info.get("type") == "directory":
            return _folder(fs, path, pattern)
        return [(path, int(info.get("size") or 0))]
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any listing failure is fatal here
        raise ConfigError(f"manifest {pattern}: cannot list: {type(exc).__name__}: {exc}") from None


def _shards(fs, paths: list[str], pattern: str) -> list[tuple[str, int]]:
    """The files a brace pattern names, each required. One listing per folder (an object store answers a
    listing as fast as one lookup), not one request per shard."""
    listed: dict[str, dict] = {}
    for folder in dict.fromkeys(posixpath.dirname(p) for p in paths):
        try:
            listed.update({i["name"].rstrip("/"): i for i in fs.ls(folder, detail=True)})
        except FileNotFoundError:
            pass
    found, missing = [], []
    for path in paths:
        if any(c in path for c in GLOB_CHARS):  # a glob inside a brace alternative: what it matches
            matches = [(p, i) for p, i in fs.glob(path, detail=True).items() if i.get("type") != "directory"]
            found += sorted((p, int(i.get("size") or 0)) for p, i in matches)
            if not matches:
                missing.append(posixpath.basename(path))
            continue
        info = listed.get(path)
        if info is None or info.get("type") == "directory":
            missing.append(posixpath.basename(path))
        else:
            found.append((path, int(info.get("size") or 0)))
    if missing:
        names = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(
            f"manifest {pattern}: {len(missing)} of the {len(paths)} files it names do not exist ({names}); "
            "fix the range or remove the missing shards from it"
        )
    return found


def _folder(fs, path: str, pattern: str) -> list[tuple[str, int]]:
    """The manifest files a folder stands for (the module docstring's rules, in that order)."""
    entries = {posixpath.basename(i["name"].rstrip("/")): i for i in fs.ls(path, detail=True)}
    if "state.json" in entries:
        return _saved_dataset(fs, path, pattern, entries)
    if "dataset_dict.json" in entries:
        splits = sorted(n for n, i in entries.items() if i.get("type") == "directory")
        example = posixpath.join(pattern.rstrip("/"), splits[0] if splits else "train")
        raise ConfigError(
            f"manifest {pattern}: a Hugging Face DatasetDict saved with save_to_disk (splits: {', '.join(splits)}); "
            f"point input.manifests at one split's folder ({example}) or list several"
        )
    files = _manifest_files(entries.values())
    if files:
        return files
    data = entries.get("data")
    if data is not None and data.get("type") == "directory":
        data_path = posixpath.join(path, "data")
        below = _manifest_files(fs.find(data_path, detail=True).values())
        if below:
            # data/train-00000-of-00002.parquet or data/train/00000.parquet: the split is the first name part
            splits = sorted({posixpath.relpath(p, data_path).split("/")[0].split("-")[0] for p, _ in below})
            log.info(
                "manifest %s: a Hugging Face dataset repository: reading %d files under data/ (splits: %s)",
                pattern,
                len(below),
                ", ".join(splits),
            )
            return below
    raise ConfigError(f"manifest {pattern}: the folder holds no manifest files: {_describe(entries)}")


def _manifest_files(infos) -> list[tuple[str, int]]:
    """Manifest files among listed entries, sorted, without the metadata a format's files have beside them
    (`metadata_beside`: img2dataset's per-shard metadata Parquet)."""
    listed = set(listed_suffixes())
    files = {
        i["name"]: int(i.get("size") or 0)
        for i in infos
        if i.get("type") != "directory" and manifest_suffix(i["name"]) in listed
    }
    metadata: set[str] = set()
    for fmt in registered():
        if not fmt.metadata_beside:
            continue
        stems = {_stem(n) for n in files if manifest_suffix(n) in fmt.suffixes}
        beside = {n for n in files if manifest_suffix(n) in fmt.metadata_beside and _stem(n) in stems} - metadata
        if beside:
            log.info(
                "manifests: %d %s files beside %s files of the same name are their metadata: not read",
                len(beside),
                "/".join(fmt.metadata_beside),
                fmt.display_name,
            )
            metadata |= beside
    return sorted((n, size) for n, size in files.items() if n not in metadata)


def _stem(path: str) -> str:
    return path[: len(path) - len(manifest_suffix(path))]


def _saved_dataset(fs, path: str, pattern: str, entries: dict) -> list[tuple[str, int]]:
    """The Arrow files of a `datasets` save_to_disk folder, as its `state.json` lists them."""
    try:
        with fs.open(posixpath.join(path, "state.json"), "rb") as f:
            names = [d["filename"] for d in json.loads(f.read())["_data_files"]]
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(
            f"manifest {pattern}: state.json of this Hugging Face save_to_disk folder cannot be read "
            f"({type(exc).__name__}: {exc}); point input.manifests at its .arrow files instead"
        ) from None
    missing = [n for n in names if n not in entries]
    if missing or not names:
        raise ConfigError(
            f"manifest {pattern}: state.json lists data files that are not in the folder "
            f"({', '.join(missing[:5]) or 'none listed'}); save the dataset again"
        )
    return [(entries[n]["name"], int(entries[n].get("size") or 0)) for n in names]


def _describe(entries: dict) -> str:
    """What a folder holds, briefly: counts by suffix and a few names."""
    if not entries:
        return "it is empty"
    counts = Counter(
        "folder" if i.get("type") == "directory" else (manifest_suffix(n) or "no suffix") for n, i in entries.items()
    )
    parts = [f"{count} {kind}" for kind, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    examples = sorted(n + ("/" if entries[n].get("type") == "directory" else "") for n in entries)[:5]
    listed = listed_suffixes()
    hint = "".join(
        f"; `{suffix}` files in a folder are taken as metadata: name a {fmt.display_name} file explicitly"
        for suffix in sorted(counts)
        if suffix not in listed and (fmt := format_for_suffix(suffix)) is not None
    )
    return f"{', '.join(parts)} (e.g. {', '.join(examples)}); manifests end in {', '.join(listed)}{hint}"
