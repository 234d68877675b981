"""The InternLM2 tokenizer (2B, 8B, 26B), without the checkpoint's remote code.

InternLM2 checkpoints ship a SentencePiece model (`tokenizer.model`) and a Python tokenizer class to be run
with `trust_remote_code`. What that class does is small: split the text on the added tokens (InternVL's
`<img>`, `<IMG_CONTEXT>`, ... and the chat tokens), encode every other piece with the SentencePiece model,
prepend `<s>` (BOS). This class does exactly that with the `sentencepiece` library, and offers the few
tokenizer methods the job uses (`__call__`, `get_vocab`, `convert_tokens_to_ids`, `decode`, `pad_token_id`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from internvl_batch.errors import ModelLoadError


class SentencePieceChatTokenizer:
    def __init__(self, directory: str | Path) -> None:
        try:
            import sentencepiece as spm
        except ImportError:
            raise ModelLoadError("InternLM2-based models need sentencepiece: pip install sentencepiece") from None
        directory = Path(directory)
        self.sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
        config = _read_json(directory / "tokenizer_config.json")
        added = {tok: int(i) for tok, i in _read_json(directory / "added_tokens.json").items()}
        for index, entry in (config.get("added_tokens_decoder") or {}).items():
            added.setdefault(entry["content"], int(index))
        self.vocab = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size())}
        self.vocab.update(added)
        self.added = added
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        # Longest first, so that a token that is a prefix of another never wins.
        self._split = (
            re.compile("(" + "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)) + ")")
            if added
            else None
        )
        self.add_bos_token = bool(config.get("add_bos_token", True))
        self.bos_token_id = self.sp.bos_id()
        self.eos_token_id = self.sp.eos_id()
        pad = _token_text(config.get("pad_token")) or "</s>"
        self.pad_token_id = self.vocab.get(pad, self.eos_token_id)
        specials = {self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id(), self.pad_token_id}
        specials |= {
            i
            for t, i in added.items()
            if (config.get("added_tokens_decoder") or {}).get(str(i), {}).get("special", True)
        }
        self.special_ids = {i for i in specials if i >= 0}

    def __len__(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.sp.unk_id())
        return [self.vocab.get(t, self.sp.unk_id()) for t in tokens]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.bos_token_id] if add_special_tokens and self.add_bos_token else []
        for piece in self._split.split(text) if self._split else [text]:
            if not piece:
                continue
            if piece in self.added:
                ids.append(self.added[piece])
            else:
                ids.extend(self.sp.encode(piece))
        return ids

    def __call__(self, text: str, add_special_tokens: bool = True, **_) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        out, run = [], []
        for i in ids:
            i = int(i)
            if i in self.added or i in self.special_ids:
                if run:
                    out.append(self.sp.decode(run))
                    run = []
                if not (skip_special_tokens and i in self.special_ids):
                    out.append(self.id_to_token.get(i, ""))
            else:
                run.append(i)
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)


def is_sentencepiece_checkpoint(directory: str | Path) -> bool:
    """True for InternLM2-style tokenizers (a SentencePiece model and its remote-code tokenizer class)."""
    directory = Path(directory)
    config = _read_json(directory / "tokenizer_config.json")
    return (directory / "tokenizer.model").is_file() and "InternLM2" in str(config.get("tokenizer_class", ""))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value
