"""A checkpoint's tokenizer, without torch: the CPU stage builds prompts with it, and importing torch would
cost each preprocessing actor ~2 s of CPU and a few hundred MB at start.

Never runs code from a checkpoint: Qwen2 checkpoints load through transformers' built-in classes, InternLM2's
through our SentencePiece implementation (`spm_tokenizer.py`).
"""

from __future__ import annotations

import json

from internvl_batch.errors import ModelLoadError
from internvl_batch.model.checkpoint import CheckpointInfo
from internvl_batch.model.spm_tokenizer import SentencePieceChatTokenizer, is_sentencepiece_checkpoint

REQUIRED_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<|im_end|>")
# The class that InternVL 2.5's Qwen2-based checkpoints name in tokenizer_config.json (and its old fast alias).
# Loaded directly, it is the class AutoTokenizer would pick, without AutoTokenizer's imports, which bring torch.
QWEN2_CLASSES = ("Qwen2Tokenizer", "Qwen2TokenizerFast")


def load_tokenizer(info: CheckpointInfo):
    """The checkpoint's own tokenizer, through transformers' built-in classes (Qwen2) or our SentencePiece
    implementation of InternLM2's (never the checkpoint's code)."""
    if is_sentencepiece_checkpoint(info.path):
        tokenizer = SentencePieceChatTokenizer(info.path)
        _check_tokens(info, tokenizer)
        return tokenizer
    from transformers.utils import logging as hf_logging

    # Loading peeks at config.json and warns that `internvl_chat` is not a transformers model type, which is
    # expected for original checkpoints and only confuses users.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        if _tokenizer_class(info) in QWEN2_CLASSES:
            from transformers import Qwen2Tokenizer

            tokenizer = Qwen2Tokenizer.from_pretrained(str(info.path))
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(info.path), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - surface any tokenizer failure as one clear load error
        raise ModelLoadError(f"cannot load the tokenizer of {info.name}: {type(exc).__name__}: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    _check_tokens(info, tokenizer)
    return tokenizer


def _tokenizer_class(info: CheckpointInfo) -> str | None:
    try:
        return json.loads((info.path / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None  # AutoTokenizer says what is wrong


def _check_tokens(info: CheckpointInfo, tokenizer) -> None:
    vocab = tokenizer.get_vocab()
    missing = [t for t in REQUIRED_TOKENS if t not in vocab]
    if missing:
        raise ModelLoadError(f"the tokenizer of {info.name} lacks the InternVL tokens {missing}")
