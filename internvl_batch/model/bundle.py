"""A model without its weights: resolved files, checkpoint facts, tokenizer and prompt builder.

The driver (to check the model before any work), the CPU stage (to build prompts) and each replica (before
loading the weights) all build it with `ModelBundle.load`, so the three agree on the files, the tokenizer,
the prompts and the name the output's `model` column shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from internvl_batch.config import ModelConfig, StorageConfig
from internvl_batch.model.checkpoint import CheckpointInfo, read_checkpoint_info
from internvl_batch.model.locate import display_name, resolve_model_path
from internvl_batch.model.tokenizer import load_tokenizer
from internvl_batch.prompts import PromptBuilder


@dataclass(frozen=True)
class ModelBundle:
    path: Path  # the local checkpoint directory
    info: CheckpointInfo
    tokenizer: object  # a transformers tokenizer, or SentencePieceChatTokenizer (InternLM2)
    prompts: PromptBuilder

    @property
    def name(self) -> str:
        return self.info.name

    @classmethod
    def load(
        cls, model: ModelConfig, storage: StorageConfig | None = None, weights: bool = False, name: str | None = None
    ) -> ModelBundle:
        """Resolve `model.path` (with the safetensors weights when `weights`), read its config and tokenizer.
        `name` overrides the display name (`locate.display_name`)."""
        path = resolve_model_path(model.path, model.cache_dir, weights=weights, storage=storage)
        info = read_checkpoint_info(path, name=name or display_name(model.path))
        tokenizer = load_tokenizer(info)
        return cls(path, info, tokenizer, PromptBuilder(tokenizer, info.system_message, info.tokens_per_tile))
