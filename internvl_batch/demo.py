"""`internvl-batch demo`: the embedded default, end to end, on any machine.

Bundled sample media, a tiny random-weight checkpoint made on first use and cached, CPU or GPU. The tiny
checkpoint has the real architecture and random weights: its text is meaningless by design. Point
`model.path` at OpenGVLab/InternVL2_5-4B (or a local copy) for real captions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SAMPLES = Path(__file__).parent / "assets" / "samples"
TINY_NOTE = (
    "NOTE: the demo uses a tiny checkpoint with random weights, so the text is meaningless. For real captions, "
    "set model.path to OpenGVLab/InternVL2_5-4B (a Hub id or a local copy)."
)


def cache_dir() -> Path:
    root = os.environ.get("INTERNVL_BATCH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "internvl-batch"
    return Path(root)


def tiny_checkpoint_path(seed: int = 0) -> Path:
    """The cached tiny checkpoint, written on first use (atomically, so a crash never leaves half of one)."""
    from internvl_batch.model.tiny import make_tiny_checkpoint

    target = cache_dir() / f"tiny-internvl2_5-seed{seed}"
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


def sample_images() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
