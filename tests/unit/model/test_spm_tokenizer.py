"""The InternLM2 tokenizer's rules (`model/spm_tokenizer.py`), each with its expected ids and strings, on the
tiny InternLM2 tokenizer (a real SentencePiece model in the published layout).

The expectations are derived from the rules read from the published `InternLM2Tokenizer` and transformers'
slow-tokenizer code (4.37 and 5.24 agree here), not from running either: a text is split at the no-split
tokens (added tokens, and the special tokens `<s>`, `</s>`, `<unk>`, ...), each piece between them is encoded
by the SentencePiece model alone, `<s>` goes first; decoding drops special ids first, decodes the remaining
pieces as one run, and applies transformers' clean-up. The same encoding table runs on the Qwen2 path
(transformers' own Qwen2 tokenizer), where only Qwen's added tokens are tokens and `<s>` is text.
"""

from typing import NamedTuple

import pytest

from internvl_batch.model.spm_tokenizer import SentencePieceChatTokenizer


class Tok(NamedTuple):
    """A no-split token in an expected split (its id comes from the tokenizer's vocabulary)."""

    text: str


# (text, its split: text pieces and tokens). Rule: leftmost, longest token first; a piece is never empty.
ENCODING = [
    ("", []),
    (" ", [" "]),
    ("\n", ["\n"]),
    ("Please describe the image shortly.", ["Please describe the image shortly."]),
    ("a <s> b </s> c <unk> d", ["a ", Tok("<s>"), " b ", Tok("</s>"), " c ", Tok("<unk>"), " d"]),
    ("<s>", [Tok("<s>")]),
    ("</s></s>", [Tok("</s>"), Tok("</s>")]),
    ("<s>hello", [Tok("<s>"), "hello"]),
    ("x<unk>", ["x", Tok("<unk>")]),
    ("<s", ["<s"]),
    ("<|im_end|>\n<|im_start|>system\nYou are", [Tok("<|im_end|>"), "\n", Tok("<|im_start|>"), "system\nYou are"]),
    ("<img><IMG_CONTEXT></img>", [Tok("<img>"), Tok("<IMG_CONTEXT>"), Tok("</img>")]),
    (
        "<ref>the dog</ref><box>[[1, 2, 3, 4]]</box>",
        [Tok("<ref>"), "the dog", Tok("</ref>"), Tok("<box>"), "[[1, 2, 3, 4]]", Tok("</box>")],
    ),
    ("  two  spaces\n\nnew\tline  ", ["  two  spaces\n\nnew\tline  "]),
    ("日本語 😀 态 juge", ["日本語 😀 态 juge"]),
    ("é<|im_end|>😀", ["é", Tok("<|im_end|>"), "😀"]),
]
QWEN_TOKENS = {"<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<ref>", "</ref>", "<box>", "</box>"}


@pytest.fixture(scope="module")
def internlm2(tmp_path_factory):
    from internvl_batch.model.tiny_tokenizer import train_tiny_spm_tokenizer

    directory = tmp_path_factory.mktemp("internlm2-tokenizer")
    train_tiny_spm_tokenizer(directory)
    return SentencePieceChatTokenizer(directory)


@pytest.fixture(scope="module")
def qwen2(tiny_tokenizer):
    return tiny_tokenizer  # the tiny Qwen2 checkpoint's, through transformers' Qwen2 class


def expected_ids(tokenizer, split, encode_text, bos):
    ids = [bos] if bos is not None else []
    for part in split:
        ids += [tokenizer.convert_tokens_to_ids(part.text)] if isinstance(part, Tok) else encode_text(part)
    return ids


@pytest.mark.parametrize("text, split", ENCODING)
def test_internlm2_encoding(internlm2, text, split):
    # Each text piece by the SentencePiece model alone; the tokens by their ids; <s> first.
    expected = expected_ids(internlm2, split, internlm2.sp.encode, internlm2.sp.bos_id())
    assert internlm2(text)["input_ids"] == expected


def test_internlm2_control_tokens_written_in_text_are_tokens(internlm2):
    assert internlm2.encode("<s></s><unk>", add_special_tokens=False) == [1, 2, 0]
    assert internlm2.encode("<s>")[:2] == [1, 1]  # BOS, then the question's own <s>


@pytest.mark.parametrize("text, split", ENCODING)
def test_qwen2_encoding(qwen2, text, split):
    # Qwen2: no BOS; only its added tokens are tokens (<s>, </s>, <unk> are text); byte-level BPE is lossless.
    merged = []
    for part in split:
        part = part if not isinstance(part, Tok) or part.text in QWEN_TOKENS else part.text
        if merged and isinstance(part, str) and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)

    def encode_text(piece):
        return qwen2(piece, add_special_tokens=False)["input_ids"]

    ids = qwen2(text, add_special_tokens=True)["input_ids"]
    assert ids == expected_ids(qwen2, merged, encode_text, None)
    assert qwen2.decode(ids, skip_special_tokens=False) == text


def pieces(tokenizer, *parts):
    """Ids from SentencePiece pieces (strings) and token texts (Tok)."""
    return [tokenizer.convert_tokens_to_ids(p.text if isinstance(p, Tok) else p) for p in parts]


# (ids as pieces, decoded with skip_special_tokens=True). The "▁" of a piece is a space unless it begins a run.
DECODING_SKIP = [
    ([], ""),
    ([Tok("<s>"), "Please", "▁describe", "▁the", "▁image"], "Please describe the image"),  # special at the start
    (["Please", "▁describe", Tok("<|im_end|>")], "Please describe"),  # at the end
    (["Please", Tok("<|interpreter|>"), "▁describe"], "Please describe"),  # in the middle: one run, space kept
    (["<0x53>", Tok("<|interpreter|>"), "▁A"], "S A"),
    (["Please", Tok("<img>"), Tok("<IMG_CONTEXT>"), "▁the", Tok("</s>"), "▁image"], "Please the image"),
    (["Please", Tok("<unk>"), "▁image"], "Please image"),
    ([Tok("<s>"), Tok("</s>")], ""),
    (["▁the"], "the"),  # a run's first "▁" is dropped by SentencePiece
    (["Hello", "▁", ".", "▁w", "or", "l", "d", "▁", "<0x21>"], "Hello. world!"),  # clean-up: " ." and " !"
    (["it", "▁", "<0x27>", "s"], "it's"),  # clean-up: " 's"
    (["<0xE6>", "<0x97>", "<0xA5>", "▁", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "▁", "态"], "日 😀 态"),
]
# The same without skipping: a special token is preceded by a space unless the piece before it was special.
DECODING_KEEP = [
    ([Tok("<s>"), "Please", "▁describe"], " <s>Please describe"),
    (["Please", Tok("<|interpreter|>"), "▁describe"], " Please<|interpreter|>describe"),
    (["Please", Tok("<|im_end|>"), Tok("<|im_start|>"), "▁the"], " Please<|im_end|><|im_start|>the"),
    (["Please", Tok("<img>"), "▁the", Tok("</s>")], " Please<img> the</s>"),  # the space goes before the run
]


@pytest.mark.parametrize("parts, text", DECODING_SKIP)
def test_internlm2_decoding_skipping_special_tokens(internlm2, parts, text):
    ids = pieces(internlm2, *parts)
    assert internlm2.sp.unk_id() not in ids or Tok("<unk>") in parts  # every piece is in the vocabulary
    assert internlm2.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("parts, text", DECODING_KEEP)
def test_internlm2_decoding_keeping_special_tokens(internlm2, parts, text):
    assert internlm2.decode(pieces(internlm2, *parts), skip_special_tokens=False) == text


def test_qwen2_decoding_drops_special_tokens_and_keeps_the_text_between(qwen2):
    # Byte-level BPE: the text of the tokens on both sides of a skipped one is joined as it is (no space).
    left, right = qwen2("Please", add_special_tokens=False)["input_ids"], qwen2(" the", add_special_tokens=False)
    im_end = qwen2.convert_tokens_to_ids("<|im_end|>")
    assert qwen2.decode(left + [im_end] + right["input_ids"], skip_special_tokens=True) == "Please the"
    assert qwen2.decode([im_end] + left + [im_end], skip_special_tokens=True) == "Please"


def test_ids_outside_the_vocabulary_are_skipped(internlm2):
    assert internlm2.decode([10**6, *pieces(internlm2, "Please")]) == "Please"
