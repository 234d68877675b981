"""`internvl-batch demo`: the embedded default, end to end, on any machine.

Bundled sample media, a tiny random-weight checkpoint made on first use and cached, CPU or GPU. The tiny
checkpoint has the real architecture and random weights: its text is meaningless by design. Point
`model.path` at OpenGVLab/InternVL2_5-4B (or a local copy) for real captions.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).parent / "assets" / "samples"
TINY_NOTE = (
    "NOTE: the demo uses a tiny checkpoint with random weights, so the text is meaningless. For real captions: "
    "internvl-batch demo --set model.path=OpenGVLab/InternVL2_5-4B (a Hub id or a local copy; a GPU helps)."
)


def demo_config(output: str = "outputs/demo", max_new_tokens: int = 16) -> dict:
    """The embedded default (configs/demo.yaml says the same, with paths relative to the repository)."""
    return {
        "input": {"manifests": [str(SAMPLES / "manifest.jsonl")]},
        "output": {"path": output, "resume": False, "report": True},
        "model": {"path": "tiny"},
        "generation": {"max_new_tokens": max_new_tokens},
        "resources": {"cpu_actors": 1, "cpu_batch_size": 4, "gpu_replicas": 1},
    }
