"""Stage a model stored on S3 to local disk once per node, then load it from there.

Every actor on a node calls `stage_s3_model`; a file lock makes the first one download while the others
wait, and a completion marker makes later calls free. The download goes to a temporary directory that is
renamed into place, so a crash never leaves a half-staged model that looks complete. Only configs,
tokenizer files and safetensors weights are fetched (never the checkpoint's Python files).

Object keys are not paths: a key may hold `..`, `.` or empty components (`m/../../x.json`, `m//etc/x.json`).
Every key to fetch must be a plain relative path under the model's prefix (`relative_key`), or the whole
staging is refused before anything is written: nothing lands outside the model's directory, and no two keys
(`m/a.json`, `m/./a.json`) write the same file.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ModelLoadError
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.model.checkpoint import is_pickled_weight, pickled_weights_error
from internvl_batch.redact import redact_text

log = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")
WEIGHT_SUFFIXES = (".safetensors",)
COMPLETE = ".complete"


def default_cache_root() -> Path:
    root = (
        os.environ.get("INTERNVL_BATCH_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "internvl-batch"
    )
    return Path(root)


def relative_key(file: str, prefix: str, uri: str) -> PurePosixPath:
    """Where the object `file` (as the filesystem lists it: `bucket/key`) goes under the staging directory: its
    path below `prefix`. Raises ModelLoadError, naming the object, unless that path is plain: relative, with no
    empty, `.` or `..` component, and not the prefix itself."""
    base = prefix.rstrip("/") + "/"
    scheme = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    rel = file[len(base) :] if file.startswith(base) else None
    if not rel:
        reason = "it is not a file under the model's prefix"
    elif rel.startswith("/"):
        reason = f"its path under the prefix, {rel!r}, is absolute"
    elif ".." in rel.split("/"):
        reason = f"its path under the prefix, {rel!r}, has a '..' component and could leave the model's directory"
    elif any(part in ("", ".") for part in rel.split("/")):
        reason = f"its path under the prefix, {rel!r}, has an empty or '.' component"
    else:
        return PurePosixPath(rel)
    raise ModelLoadError(f"model {uri}: refusing to stage object {scheme}{file}: {reason}; nothing was staged")


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits while another process on this node stages the same model
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stage_s3_model(uri: str, storage: StorageConfig, cache_root: Path | None = None, weights: bool = True) -> Path:
    """The local directory holding the model at `uri` (an s3:// prefix), downloaded on first use."""
    root = (cache_root or default_cache_root()) / "models"
    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16] + "-" + uri.rstrip("/").rsplit("/", 1)[-1]
    full, configs_only = root / key, root / f"{key}-configs"
    if (full / COMPLETE).exists():
        return full
    target = full if weights else configs_only
    suffixes = CONFIG_SUFFIXES + (WEIGHT_SUFFIXES if weights else ())
    with _locked(root / f"{target.name}.lock"):
        if (target / COMPLETE).exists():
            return target
        fs, prefix = fsspec_filesystem(uri, storage)
        try:
            listed = fs.find(prefix.rstrip("/"))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot list model {uri}: {type(exc).__name__}: {exc}") from None
        files = [f for f in listed if f.endswith(suffixes)]
        if not any(f.endswith("/config.json") for f in files):
            raise ModelLoadError(f"model {uri}: no config.json under that prefix")
        # Only pytorch_model*.bin weights (pickles, never fetched): refused with the loader's message here, where
        # the driver's check (which stages configs only) sees every key, as a replica does.
        if any(is_pickled_weight(f) for f in listed) and not any(f.endswith(WEIGHT_SUFFIXES) for f in listed):
            raise pickled_weights_error(uri)
        relative = {file: relative_key(file, prefix, uri) for file in files}  # before anything is written
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
        try:
            log.info("staging %s (%d files) to %s", redact_text(uri), len(files), target)
            for file, rel in relative.items():
                local = staging / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(file, str(local))
            (staging / COMPLETE).write_text(uri)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot download model {uri}: {type(exc).__name__}: {exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
