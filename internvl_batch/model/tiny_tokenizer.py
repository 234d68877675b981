"""A real byte-level BPE tokenizer, trained on the spot, in the Qwen2 file layout InternVL 2.5 ships.

It carries the same added tokens in the same order as the published Qwen-based InternVL 2.5 tokenizers
(Qwen2.5's 22 chat/control tokens, then InternVL's 9), so ids differ from the real ones only by the size of
the base vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

from internvl_batch.model.checkpoint import DEFAULT_SYSTEM_MESSAGE

QWEN_ADDED_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
INTERNVL_ADDED_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
NOT_SPECIAL = {"<tool_call>", "</tool_call>"}  # Qwen2.5 marks these two as ordinary added tokens

_CORPUS = [
    "Please describe the image shortly.",
    "Please describe the image in detail.",
    "Provide a one-sentence caption for the provided image.",
    "Answer the question using a single word or phrase.",
    "Please recognize the text in the image.",
    "Please provide the bounding box coordinate of the region this sentence describes:",
    "What is in this picture? A cat sitting on a red sofa next to a window.",
    "A photo of a mountain lake at sunrise, with pine trees and a small wooden boat.",
    "The chart shows sales by month; the highest value is in December.",
    "Frame1: Frame2: Image-1: Image-2: What is the red panda doing?",
    "Hello, who are you? I am InternVL, a multimodal large language model.",
    "The quick brown fox jumps over the lazy dog. 0123456789 (x1, y1, x2, y2) [[120, 340, 560, 780]]",
    DEFAULT_SYSTEM_MESSAGE,
    "请识别图中的文字。这是一张照片。",
]


def train_tiny_tokenizer(out_dir: Path, base_vocab_size: int = 512, model_max_length: int = 32768) -> int:
    """Train and write the tokenizer files into `out_dir`; returns the full vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=base_vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")

    added = QWEN_ADDED_TOKENS + INTERNVL_ADDED_TOKENS
    first = len(vocab)
    decoder = {
        str(first + i): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": tok not in NOT_SPECIAL,
        }
        for i, tok in enumerate(added)
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [t for t in added[1:] if t not in NOT_SPECIAL],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "added_tokens.json").write_text(
        json.dumps({tok: first + i for i, tok in enumerate(added)}, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    special_map = {
        "additional_special_tokens": config["additional_special_tokens"],
        "eos_token": {
            "content": "<|im_end|>",
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        },
        "pad_token": {
            "content": "<|endoftext|>",
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        },
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2), encoding="utf-8")
    return first + len(added)


INTERNLM2_CHAT_TOKENS = [
    "<|plugin|>",
    "<|interpreter|>",
    "<|action_end|>",
    "<|action_start|>",
    "<|im_end|>",
    "<|im_start|>",
]


def train_tiny_spm_tokenizer(out_dir: Path, vocab_size: int = 640) -> int:
    """An InternLM2-style tokenizer: a SentencePiece model (byte fallback, chat tokens as user-defined
    symbols), InternVL's tokens added after it, and the remote-code tokenizer class named in the config (as
    the published checkpoints do; we never run it). Returns the full vocabulary size."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 8),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        user_defined_symbols=INTERNLM2_CHAT_TOKENS,
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        split_digits=True,
        character_coverage=1.0,
        num_threads=1,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    size = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    added = {tok: size + i for i, tok in enumerate(INTERNVL_ADDED_TOKENS)}
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    chat = {tok: processor.piece_to_id(tok) for tok in INTERNLM2_CHAT_TOKENS}
    decoder = {
        str(i): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for tok, i in sorted({**chat, **added}.items(), key=lambda kv: kv[1])
    }
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": INTERNLM2_CHAT_TOKENS + INTERNVL_ADDED_TOKENS,
        "auto_map": {
            "AutoTokenizer": [
                "tokenization_internlm2.InternLM2Tokenizer",
                "tokenization_internlm2_fast.InternLM2TokenizerFast",
            ]
        },
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "model_max_length": 32768,
        "pad_token": "</s>",
        "tokenizer_class": "InternLM2Tokenizer",
        "unk_token": "<unk>",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "added_tokens.json").write_text(json.dumps(added, indent=2), encoding="utf-8")
    special_map = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "</s>",
        "unk_token": "<unk>",
        "additional_special_tokens": config["additional_special_tokens"],
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2), encoding="utf-8")
    return size + len(added)
