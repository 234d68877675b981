"""Where a model's files are: a local directory, an object-store prefix staged on the node, a Hugging Face
Hub id, or the project's tiny checkpoint. Never the checkpoint's code: only configs, tokenizer and weights.
"""

from __future__ import annotations

import re
from pathlib import Path

from internvl_batch.config import StorageConfig
from internvl_batch.errors import ModelLoadError
from internvl_batch.model.staging import stage_s3_model

# Files worth fetching from the Hub: configs, tokenizer, weights. Never the checkpoint's *.py files.
HUB_CONFIG_PATTERNS = ["*.json", "*.txt", "tokenizer.model", "*.tiktoken"]
HUB_WEIGHT_PATTERNS = ["*.safetensors"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def display_name(model: str | Path) -> str:
    """What the output's `model` column says: a local checkpoint by its directory's name, anything else (a
    Hub id, an object-store prefix, `tiny`) as given."""
    local = Path(model).expanduser()
    return local.resolve().name if local.exists() else str(model)


def resolve_model_path(model: str | Path, cache_dir: str | None = None, weights: bool = True, storage=None) -> Path:
    """The local directory of a model:
    - a local directory as it is;
    - `s3://`, `gs://` or `az://` prefixes: staged once per node under `cache_dir` (`model/staging.py`);
    - a Hub id (`org/name`): downloaded into the Hugging Face cache (its own file locks make concurrent
      actors on a node download once);
    - `tiny` / `tiny:SEED`: the project's tiny checkpoint, written on first use.
    Configs and tokenizer always; the safetensors weights unless `weights=False` (preprocessing workers);
    never the checkpoint's code."""
    text = str(model)
    if text == "tiny" or text.startswith("tiny:"):
        # Imported only when asked for: the tiny checkpoint's writer brings torch, which the preprocessing
        # actors (they resolve the model for its tokenizer) never load otherwise.
        from internvl_batch.model.tiny import tiny_checkpoint_path

        seed = text.partition(":")[2] or "0"
        if not seed.isdigit():
            raise ModelLoadError(f"model {text!r}: the tiny checkpoint's seed must be a number (tiny:SEED)")
        return tiny_checkpoint_path(int(seed), Path(cache_dir) if cache_dir else None)
    if text.startswith(("s3://", "gs://", "gcs://", "az://", "abfs://")):  # object stores: storage.py
        return stage_s3_model(text, storage or StorageConfig(), Path(cache_dir) if cache_dir else None, weights)
    local = Path(model).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.exists():
        raise ModelLoadError(f"model path {text!r} is a file; expected a checkpoint directory")
    if not _HUB_ID.match(text):
        raise ModelLoadError(f"model {text!r} is neither a local directory nor a Hugging Face Hub id (org/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of transformers
        raise ModelLoadError("huggingface_hub is needed to download models: pip install huggingface_hub") from None
    try:
        patterns = HUB_CONFIG_PATTERNS + (HUB_WEIGHT_PATTERNS if weights else [])
        hub_cache = str(Path(cache_dir) / "hub") if cache_dir else None
        return Path(snapshot_download(text, allow_patterns=patterns, cache_dir=hub_cache))
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
        reason = " ".join(str(exc).split())
        raise ModelLoadError(
            f"cannot fetch {text!r} from the Hugging Face Hub ({type(exc).__name__}: {reason}). Without network "
            f"access, download it elsewhere (`hf download {text}`) and pass the local directory."
        ) from None
