"""`make-tiny-checkpoint`: a random-weight InternVL 2.5 in the real checkpoint layout, in seconds.

The original layout has the published checkpoints' config fields and weight names (so the original remote
code would load it too, with no missing or extra weights), sharded safetensors with an index, and a real
trained BPE tokenizer (`model/tiny_tokenizer.py`). It loads through exactly the code that loads real
checkpoints. The architecture is the real one, only narrow (`model/tiny_architecture.py`: the config and the
weight names and shapes it implies); this module writes the files.

Weights are drawn with a wide spread so that greedy outputs of different prompts and images differ; the text
is meaningless.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from internvl_batch.model.checkpoint import read_checkpoint_info
from internvl_batch.model.loader import load_model
from internvl_batch.model.spm_tokenizer import SentencePieceChatTokenizer
from internvl_batch.model.staging import default_cache_root
from internvl_batch.model.tiny_architecture import LLMS, VISIONS, original_config, original_weight_shapes
from internvl_batch.model.tiny_tokenizer import train_tiny_spm_tokenizer, train_tiny_tokenizer
from internvl_batch.model.tokenizer import load_tokenizer


def _draw(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(shape, generator=gen)
    leaf = name.rsplit(".", 1)[-1]
    if "norm" in name.rsplit(".", 2)[-2] or leaf in ("ls1", "ls2") or name.startswith("mlp1.0."):
        return (1.0 if leaf != "bias" else 0.0) + 0.1 * noise  # norms and layer scales around identity
    if leaf == "bias":
        return 0.1 * noise
    if len(shape) >= 2 and "embed" not in name:
        fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
        return noise * (2.0 / fan_in**0.5)  # twice the usual init: confident, prompt-dependent greedy picks
    return noise  # embeddings


def _save(tensors: dict, path: Path) -> None:
    save_file(tensors, str(path), metadata={"format": "pt"})
    # safetensors writes through a private temporary file (mode 0600); a checkpoint is shared like any file.
    path.chmod(0o644)


def write_weights(out_dir: Path, shapes: dict[str, tuple[int, ...]], seed: int, shards: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    tensors = {name: _draw(name, shape, gen).to(torch.bfloat16) for name, shape in shapes.items()}
    names = list(tensors)
    if shards <= 1:
        _save(tensors, out_dir / "model.safetensors")
        return
    per = -(-len(names) // shards)
    weight_map, total = {}, 0
    for k in range(shards):
        part = {n: tensors[n] for n in names[k * per : (k + 1) * per]}
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        _save(part, out_dir / file)
        weight_map.update({n: file for n in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def make_tiny_checkpoint(
    out_dir: str | Path,
    layout: str = "original",
    seed: int = 0,
    shards: int = 2,
    llm: str = "qwen2",
    vision: str = "300m-style",
) -> Path:
    """Write a tiny checkpoint to `out_dir` (created; must be empty or absent). Deterministic for a seed."""
    out_dir = Path(out_dir)
    if layout not in ("original", "hf"):
        raise ValueError(f"layout must be 'original' or 'hf', got {layout!r}")
    if llm not in LLMS or vision not in VISIONS:
        raise ValueError(f"llm must be one of {LLMS} and vision one of {VISIONS}, got {llm!r}, {vision!r}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    if layout == "hf":
        return _make_tiny_hf(out_dir, seed, llm, vision)
    out_dir.mkdir(parents=True, exist_ok=True)
    if llm == "internlm2":
        vocab_size = train_tiny_spm_tokenizer(out_dir)
        pad = 2  # </s> pads; <|im_end|> is a user-defined SentencePiece symbol
        im_end = SentencePieceChatTokenizer(out_dir).convert_tokens_to_ids("<|im_end|>")
        tokens = {"<|im_end|>": im_end, "<|endoftext|>": pad}
    else:
        vocab_size = train_tiny_tokenizer(out_dir)
        tokens = json.loads((out_dir / "added_tokens.json").read_text())
    config = original_config(vocab_size, tokens["<|im_end|>"], tokens["<|endoftext|>"], llm, vision)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {
        "eos_token_id": [tokens["<|im_end|>"], tokens["<|endoftext|>"]],
        "pad_token_id": tokens["<|endoftext|>"],
    }
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    write_weights(out_dir, original_weight_shapes(config), seed, shards)
    return out_dir


def _make_tiny_hf(out_dir: Path, seed: int, llm: str = "qwen2", vision: str = "300m-style") -> Path:
    # A native directory is what save_pretrained writes; produce one from the original layout through the
    # loader, as a user converting a real checkpoint would.
    with tempfile.TemporaryDirectory() as tmp:
        original = make_tiny_checkpoint(Path(tmp) / "original", "original", seed, llm=llm, vision=vision)
        info = read_checkpoint_info(original)
        tokenizer = load_tokenizer(info)
        model = load_model(info, torch.bfloat16, "cpu", "sdpa", tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))
        model.save_pretrained(str(out_dir))
        for name in (
            "vocab.json",
            "merges.txt",
            "tokenizer.model",
            "tokenizer_config.json",
            "added_tokens.json",
            "special_tokens_map.json",
        ):
            if (original / name).exists():
                shutil.copy(original / name, out_dir / name)
    return out_dir


def tiny_checkpoint_path(seed: int = 0, cache_root: Path | None = None) -> Path:
    """The cached tiny checkpoint, written on first use (atomically, so a crash never leaves half of one)."""
    target = (cache_root or default_cache_root()) / f"tiny-internvl2_5-seed{seed}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        make_tiny_checkpoint(Path(tmp) / "ckpt", seed=seed)
        try:
            (Path(tmp) / "ckpt").rename(target)
        except OSError:  # another process won the race; its copy is identical
            pass
    return target
