"""Prompts exactly as the reference builds them (template `internvl2_5`), as token ids.

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n

- One image and no `<image>` in the question: the question becomes `<image>\\n{question}`.
- Several images: `Image-1: <image>\\nImage-2: <image>\\n{question}`; video frames: `Frame1: <image>\\n...`.
  A question that already places its `<image>` markers (one per image) is kept as written.
- Each `<image>`, in order, becomes `<img>` + `<IMG_CONTEXT>` x (256 x that image's tiles) + `</img>`.
- Generation stops at `<|im_end|>`.

Token ids are made by tokenising the prompt with one `<IMG_CONTEXT>` per image and repeating that id: added
tokens are matched before BPE runs, so this equals tokenising the fully expanded string (tested), without
pushing thousands of placeholder tokens through the tokenizer for every row.

Chat tokens written in a question (`<|im_end|>`, `<|im_start|>system ...`) are tokens, as in the reference: they
can end the user turn and rewrite the prompt. `build(..., escape=True)` (`prompt.escape_special_tokens`) makes
them plain text instead: the prompt is tokenised in pieces, each such token in the question by the tokenizer's
plain-text path (`plain_token_ids`), so its characters reach the model as ordinary tokens. A question without
such text gets the same ids either way. `<image>` markers are not tokens and keep their meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from internvl_batch.errors import PromptError

IMAGE_PLACEHOLDER = "<image>"
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
STOP_TOKEN = "<|im_end|>"
PAD_FALLBACK = "<|endoftext|>"

MEDIA_KINDS = ("none", "image", "images", "video")


def with_image_markers(question: str, num_images: int, kind: str) -> str:
    """The question with one `<image>` per image, placed as the reference places them."""
    if kind not in MEDIA_KINDS:
        raise ValueError(f"media kind must be one of {MEDIA_KINDS}, got {kind!r}")
    present = question.count(IMAGE_PLACEHOLDER)
    if num_images == 0:
        if present:
            raise PromptError(f"the question has {present} <image> markers but the row has no media")
        return question
    if present:
        if present != num_images:
            raise PromptError(f"the question has {present} <image> markers for {num_images} images")
        return question
    if kind == "video":
        return "".join(f"Frame{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(num_images)) + question
    if kind == "images" or num_images > 1:
        return "".join(f"Image-{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(num_images)) + question
    return f"{IMAGE_PLACEHOLDER}\n{question}"


def chat_prompt(system_message: str, question: str) -> str:
    """The internvl2_5 template around one user turn, ready for the assistant's answer."""
    return (
        f"<|im_start|>system\n{system_message}<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )


def expand_image_markers(prompt: str, num_tiles: list[int], tokens_per_tile: int = 256) -> str:
    """Replace each `<image>` in order with its image tokens (the reference's full prompt string)."""
    for n in num_tiles:
        prompt = prompt.replace(IMAGE_PLACEHOLDER, IMG_START + IMG_CONTEXT * (tokens_per_tile * n) + IMG_END, 1)
    return prompt


@dataclass(frozen=True)
class Prompt:
    input_ids: np.ndarray  # int64 [num_tokens]
    num_tiles: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])


class PromptBuilder:
    """Builds token ids for rows; construct once per actor with the checkpoint's tokenizer."""

    def __init__(self, tokenizer, system_message: str, tokens_per_tile: int = 256) -> None:
        self.tokenizer = tokenizer
        self.system_message = system_message
        self.tokens_per_tile = tokens_per_tile
        vocab = tokenizer.get_vocab()
        self.image_context_id = vocab[IMG_CONTEXT]
        self.stop_token_id = vocab[STOP_TOKEN]
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else vocab.get(PAD_FALLBACK, self.stop_token_id)
        self._token_pattern = None  # no-split tokens, made on the first escaped question

    def text(self, question: str, num_tiles: list[int], kind: str = "image") -> str:
        """The full prompt string the reference would tokenise (for tests and debugging)."""
        body = with_image_markers(question, len(num_tiles), kind)
        return expand_image_markers(chat_prompt(self.system_message, body), num_tiles, self.tokens_per_tile)

    def build(
        self, question: str, num_tiles: list[int] | tuple[int, ...], kind: str = "image", escape: bool = False
    ) -> Prompt:
        """Token ids of the prompt; `escape`: tokens written in the question are plain text (module docstring)."""
        if any(n < 1 for n in num_tiles):
            raise PromptError(f"every image needs at least one tile, got {list(num_tiles)}")
        found = self._tokens_in(question) if escape else []
        marker = _unused_character(question + self.system_message) if found else ""
        if found:  # each token in the question becomes marker + index + marker until it is tokenised
            question = self._token_pattern.sub(lambda m: f"{marker}{found.index(m.group(0))}{marker}", question)
        body = with_image_markers(question, len(num_tiles), kind)
        compact = chat_prompt(self.system_message, body).replace(IMAGE_PLACEHOLDER, IMG_START + IMG_CONTEXT + IMG_END)
        if found:
            ids = np.asarray(self._tokenize_escaped(compact, marker, found), dtype=np.int64)
        else:
            ids = np.asarray(self.tokenizer(compact, add_special_tokens=True)["input_ids"], dtype=np.int64)
        slots = np.flatnonzero(ids == self.image_context_id)
        if len(slots) != len(num_tiles):
            raise PromptError(
                f"the question contains InternVL image tokens of its own ({len(slots) - len(num_tiles)} extra "
                f"{IMG_CONTEXT}); remove them"
            )
        repeats = np.ones(len(ids), dtype=np.int64)
        repeats[slots] = np.asarray(num_tiles, dtype=np.int64) * self.tokens_per_tile
        return Prompt(np.repeat(ids, repeats), tuple(int(n) for n in num_tiles))

    def _tokens_in(self, question: str) -> list[str]:
        """The distinct no-split tokens spelt in the question, in order of appearance."""
        if self._token_pattern is None:
            tokens = no_split_tokens(self.tokenizer)
            self._token_pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
        return list(dict.fromkeys(self._token_pattern.findall(question)))

    def _tokenize_escaped(self, compact: str, marker: str, found: list[str]) -> list[int]:
        # Odd pieces are the indices of tokens of the question: plain text; the rest is tokenised as usual.
        ids = []
        for k, piece in enumerate(compact.split(marker)):
            if k % 2:
                ids += plain_token_ids(self.tokenizer, found[int(piece)])
            elif piece or k == 0:
                ids += self.tokenizer(piece, add_special_tokens=k == 0)["input_ids"]
        return ids

    def decode(self, token_ids) -> str:
        """Response text: cut at the first stop token, special tokens dropped, stripped (as the reference)."""
        ids = list(token_ids)
        if self.stop_token_id in ids:
            ids = ids[: ids.index(self.stop_token_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def no_split_tokens(tokenizer) -> set[str]:
    """The texts a tokenizer turns into one token wherever they appear: added and special tokens."""
    if hasattr(tokenizer, "no_split"):  # spm_tokenizer.SentencePieceChatTokenizer
        return set(tokenizer.no_split)
    return set(tokenizer.added_tokens_encoder) | set(tokenizer.all_special_tokens)


def plain_token_ids(tokenizer, text: str) -> list[int]:
    """Ids of `text` as ordinary text, never a no-split token's id."""
    if hasattr(tokenizer, "encode_plain"):
        return tokenizer.encode_plain(text)
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _unused_character(text: str) -> str:
    """A private-use character that `text` (the question and the system message) does not contain: the
    question's tokens are marked with it."""
    for code in range(0xE000, 0xF900):
        if chr(code) not in text:
            return chr(code)
    raise PromptError("the question uses every private-use character")  # needs 6400 distinct ones
