"""Read what the job needs from a checkpoint's `config.json`, without loading any weights (finding the
checkpoint's directory is `model/locate.py`).

Two layouts are understood:
- `original`: the published InternVL 2.5 checkpoints (`model_type: internvl_chat`, nested `llm_config` and
  `vision_config`, weights under `vision_model.*`, `mlp1.*`, `language_model.*`);
- `hf`: transformers' native InternVL (`model_type: internvl`), loaded as it is.

Nothing here imports or runs code shipped with a checkpoint: `auto_map` entries are ignored on purpose. Nor
are pickles ever loaded: a checkpoint whose only weights are `pytorch_model*.bin` is refused when its config is
read (`read_checkpoint_info`), so the driver's check fails with the message the replica would give.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from internvl_batch.errors import ModelLoadError, UnsupportedModelError

# The internvl2_5 template's default system message (the checkpoint's config may override it).
DEFAULT_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)

SUPPORTED_LLMS = {"Qwen2ForCausalLM": "qwen2", "InternLM2ForCausalLM": "internlm2"}
NATIVE_TEXT_TYPES = {"qwen2": "qwen2", "llama": "internlm2"}  # a converted InternLM2 is a Llama


_PICKLED_WEIGHT = re.compile(r"pytorch_model(-[^/]*)?\.bin")


def is_pickled_weight(name: str) -> bool:
    """`pytorch_model.bin` or one of its shards (`pytorch_model-00001-of-00002.bin`), by file or key name."""
    return _PICKLED_WEIGHT.fullmatch(name.rsplit("/", 1)[-1]) is not None


def pickled_weights_error(where: str | Path) -> ModelLoadError:
    """The one message for a checkpoint (a directory or an object-store prefix) whose only weights are pickles."""
    return ModelLoadError(f"{where} has only pytorch_model*.bin weights; convert them to safetensors")


def refuse_pickled_weights(path: Path) -> None:
    """Raise `pickled_weights_error` when the directory holds pytorch_model*.bin weights and no safetensors.
    (A directory with neither, such as a configs-only staged copy, passes.)"""
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    if any(is_pickled_weight(p.name) for p in path.glob("pytorch_model*.bin")):
        raise pickled_weights_error(path)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint directory says about itself (read from config.json only)."""

    path: Path
    name: str
    layout: str  # "original" | "hf"
    llm_type: str  # "qwen2" or "internlm2"
    template: str
    system_message: str
    max_dynamic_patch: int
    min_dynamic_patch: int
    use_thumbnail: bool
    image_size: int
    downsample_ratio: float
    max_position_embeddings: int
    num_llm_layers: int
    raw_config: dict[str, Any] = field(repr=False, compare=False)

    @property
    def tokens_per_tile(self) -> int:
        patches = self.image_size // 14
        return int(patches * patches * self.downsample_ratio * self.downsample_ratio)


def read_checkpoint_info(path: str | Path, name: str | None = None) -> CheckpointInfo:
    """Parse `config.json` of a checkpoint directory; clear errors for anything unusable.

    `name` is what the output's `model` column says (the Hub id or the path the user gave); the directory
    name by default.
    """
    path = Path(path)
    config_file = path / "config.json"
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is not a checkpoint: no config.json") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {config_file}: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{config_file} does not hold a JSON object")

    model_type = raw.get("model_type")
    if model_type == "internvl_chat":
        layout = "original"
        llm_config = raw.get("llm_config") or {}
        vision_config = raw.get("vision_config") or {}
        architectures = llm_config.get("architectures") or []
        llm_arch = architectures[0] if architectures else None
        if llm_arch not in SUPPORTED_LLMS:
            raise UnsupportedModelError(f"{path.name}: unsupported language model architecture {llm_arch!r}")
        llm_type = SUPPORTED_LLMS[llm_arch]
        image_size = int(raw.get("force_image_size") or vision_config.get("image_size") or 448)
    elif model_type == "internvl":
        layout = "hf"
        text_type = (raw.get("text_config") or {}).get("model_type", "qwen2")
        if text_type not in NATIVE_TEXT_TYPES:
            raise UnsupportedModelError(f"{path.name}: unsupported native text model type {text_type!r}")
        llm_type = NATIVE_TEXT_TYPES[text_type]
        vision_image_size = (raw.get("vision_config") or {}).get("image_size", 448)
        image_size = int(vision_image_size[0] if isinstance(vision_image_size, list) else vision_image_size)
    else:
        raise UnsupportedModelError(
            f"{path.name}: config.json has model_type {model_type!r}; expected an InternVL checkpoint "
            "('internvl_chat' for the original layout, 'internvl' for the native transformers layout)"
        )
    template = raw.get("template") or "internvl2_5"
    if template != "internvl2_5":
        raise UnsupportedModelError(f"{path.name}: chat template {template!r} (only 'internvl2_5' is supported)")
    text_config = (raw.get("llm_config") if layout == "original" else raw.get("text_config")) or {}
    if image_size != 448:
        raise UnsupportedModelError(f"{path.name}: image size {image_size} (only 448-pixel tiles are supported)")
    refuse_pickled_weights(path)

    # The published configs set these explicitly; the fallbacks are the model card's values (the config
    # classes' own defaults differ, so never rely on them).
    return CheckpointInfo(
        path=path,
        name=name or path.name,
        layout=layout,
        llm_type=llm_type,
        template=template,
        system_message=raw.get("system_message") or DEFAULT_SYSTEM_MESSAGE,
        max_dynamic_patch=int(raw.get("max_dynamic_patch", 12)),
        min_dynamic_patch=int(raw.get("min_dynamic_patch", 1)),
        use_thumbnail=bool(raw.get("use_thumbnail", True)),
        image_size=image_size,
        downsample_ratio=float(raw.get("downsample_ratio", 0.5)),
        max_position_embeddings=int(text_config.get("max_position_embeddings", 32768)),
        num_llm_layers=int(text_config.get("num_hidden_layers", 0)),
        raw_config=raw,
    )
