"""The InternLM2 tokenizer (2B, 8B, 26B), without the checkpoint's remote code.

InternLM2 checkpoints ship a SentencePiece model (`tokenizer.model`) and a Python tokenizer class
(`InternLM2Tokenizer`, run with `trust_remote_code` by the reference) built on transformers' slow-tokenizer
machinery. This class follows what that pair does, rule by rule, with the `sentencepiece` library alone (the
rules were read from the published class and from transformers 4.37 and 5.24, which agree on them for these
checkpoints; tests/unit/model/test_spm_tokenizer.py states each one with its expected ids and strings).

Encoding (`encode`, `__call__`):
1. The text is split at every *no-split token*: each added token (`added_tokens_decoder`, `added_tokens.json`:
   InternVL's `<img>`, `<IMG_CONTEXT>`, ..., the chat tokens) and each special token of the tokenizer
   (`<s>`, `</s>`, `<unk>`, the pad token, `additional_special_tokens`): transformers registers all of them as
   added tokens, so `<s>` written in a question is token 1, not text. Matching is leftmost, longest first.
2. A token's `lstrip` / `rstrip` flags (`added_tokens_decoder`) strip the whitespace of the text on that side.
3. Every other piece of text is encoded by the SentencePiece model on its own (so the model's normalisation,
   e.g. dropping leading and trailing spaces, applies per piece); empty pieces are skipped.
4. `<s>` is prepended when `add_bos_token` (default true); `</s>` appended when `add_eos_token`.

Decoding (`decode`):
1. With `skip_special_tokens`, the ids of the special tokens (bos, eos, unk, pad, `additional_special_tokens`;
   not an added token's `special` flag) are dropped *first*, so the ordinary tokens on both sides of a dropped
   one are decoded together: `[S, <|interpreter|>, ▁A]` gives "S A" (the "▁" is a space inside a run, and
   SentencePiece drops it only at the start of a run).
2. Ids become pieces (an added token's id: its text). Walking the pieces, each special token still present
   ends the run before it: the text is `" "` (only when the previous piece was not special) + the run
   decoded by SentencePiece + the token's text; other pieces, added non-special tokens included, are decoded
   by SentencePiece with their run (`decode_pieces`).
3. The text then gets transformers' `clean_up_tokenization` (the published class applies it always): " ." ->
   ".", " ?", " !", " ,", " ' " -> "'", " n't", " 'm", " 's", " 've", " 're" lose their space.
Ids outside the vocabulary are skipped (the published class raises). With `skip_special_tokens=False` this is
transformers 5.x's behaviour; 4.37 also sets InternVL's added tokens (ids past the SentencePiece model) apart
with spaces then. Answers are decoded with `skip_special_tokens=True`, where both agree.

`encode_plain` encodes text with no token ids at all (`prompt.escape_special_tokens`, `prompts.py`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from internvl_batch.errors import ModelLoadError

# transformers' `clean_up_tokenization`, in its order.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"))
_CLEAN_UP += ((" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class SentencePieceChatTokenizer:
    def __init__(self, directory: str | Path) -> None:
        try:
            import sentencepiece as spm
        except ImportError:
            raise ModelLoadError("InternLM2-based models need sentencepiece: pip install sentencepiece") from None
        directory = Path(directory)
        self.sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
        config = _read_json(directory / "tokenizer_config.json")
        entries = config.get("added_tokens_decoder") or {}
        added = {tok: int(i) for tok, i in _read_json(directory / "added_tokens.json").items()}
        for index, entry in entries.items():
            added.setdefault(entry["content"], int(index))
        self.vocab = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size())}
        self.vocab.update(added)
        self.added = added
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.add_bos_token = bool(config.get("add_bos_token", True))
        self.add_eos_token = bool(config.get("add_eos_token", False))
        self.bos_token_id = self.sp.bos_id()
        self.eos_token_id = self.sp.eos_id()
        pad = _token_text(config.get("pad_token")) or "</s>"
        self.pad_token_id = self.vocab.get(pad, self.eos_token_id)
        named = [_token_text(config.get(k)) or d for k, d in (("bos_token", "<s>"), ("eos_token", "</s>"))]
        named += [_token_text(config.get("unk_token")) or "<unk>", pad]
        extra = [_token_text(t) for t in config.get("additional_special_tokens") or []]
        # Special tokens: the named ones and additional_special_tokens, as transformers lists them.
        self.special_tokens = set(filter(None, named + extra))
        self.special_ids = {self.convert_tokens_to_ids(t) for t in self.special_tokens} - {-1}
        # No-split tokens: every added token and every special token (rule 1 of encoding).
        self.no_split = {t: self.convert_tokens_to_ids(t) for t in [*added, *sorted(self.special_tokens)]}
        self._strip = {}
        for entry in entries.values():
            if entry.get("single_word"):
                raise ModelLoadError(f"added token {entry['content']!r} has single_word=true, which is not supported")
            self._strip[entry["content"]] = (bool(entry.get("lstrip")), bool(entry.get("rstrip")))
        self._split = re.compile(
            "(" + "|".join(re.escape(t) for t in sorted(self.no_split, key=len, reverse=True)) + ")"
        )

    def __len__(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.sp.unk_id())
        return [self.vocab.get(t, self.sp.unk_id()) for t in tokens]

    def split(self, text: str) -> list[str]:
        """The text's pieces: no-split tokens and the text between them, stripped where a token says so."""
        pieces = self._split.split(text)  # odd positions: tokens
        for k in range(1, len(pieces), 2):
            lstrip, rstrip = self._strip.get(pieces[k], (False, False))
            if rstrip:
                pieces[k + 1] = pieces[k + 1].lstrip()
            if lstrip:
                pieces[k - 1] = pieces[k - 1].rstrip()
        return pieces

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.bos_token_id] if add_special_tokens and self.add_bos_token else []
        for k, piece in enumerate(self.split(text)):
            if k % 2:
                ids.append(self.no_split[piece])
            elif piece:
                ids.extend(self.sp.encode(piece))
        if add_special_tokens and self.add_eos_token:
            ids.append(self.eos_token_id)
        return ids

    def encode_plain(self, text: str) -> list[int]:
        """Ids of `text` as ordinary text: no id of a no-split token, even where the text spells one (the
        SentencePiece model itself matches the chat tokens it holds as user-defined symbols, so such a token's
        first character is encoded apart from the rest)."""
        pieces = self._split.split(text)
        if len(pieces) == 1:
            return self.sp.encode(text) if text else []
        ids = []
        for k, piece in enumerate(pieces):
            if k % 2:
                ids.extend(self.sp.encode(piece[:1]) + self.encode_plain(piece[1:]))
            elif piece:
                ids.extend(self.encode_plain(piece))
        return ids

    def __call__(self, text: str, add_special_tokens: bool = True, **_) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        pieces = []
        for i in ids:
            i = int(i)
            if (skip_special_tokens and i in self.special_ids) or i not in self.id_to_token:
                continue
            pieces.append(self.id_to_token[i])
        text, run, previous_special = "", [], False
        for piece in pieces:
            if piece in self.special_tokens:
                text += ("" if previous_special else " ") + self.sp.decode_pieces(run) + piece
                run, previous_special = [], True
            else:
                run.append(piece)
                previous_special = False
        text += self.sp.decode_pieces(run)
        for old, new in _CLEAN_UP:
            text = text.replace(old, new)
        return text


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
