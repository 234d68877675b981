"""`internvl-batch demo`: the embedded default, end to end, on any machine.

Bundled sample media, a tiny random-weight checkpoint made on first use and cached, CPU or GPU. The tiny
checkpoint has the real architecture and random weights: its text is meaningless by design. Point
`model.path` at OpenGVLab/InternVL2_5-4B (or a local copy) for real captions.
"""

from __future__ import annotations

from pathlib import Path

from internvl_batch.config_loader import load_config
from internvl_batch.job import main as job_main
from internvl_batch.output_dir import report_path
from internvl_batch.results import read_results

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


def run_demo(output: str, overrides: list[str], verbose: bool = False) -> int:
    """`internvl-batch demo`: the job on the embedded default (with `--set` overrides), then its results."""
    config = load_config(None, overrides, base=demo_config(output))
    print(TINY_NOTE, flush=True)
    code = job_main(config=config, verbose=verbose)
    if code == 0:
        print(f"\nresults in {config.output.path} (Parquet; internvl_batch.read_results() reads them):")
        rows = read_results(config.output.path, config.storage).to_pylist()
        width = max([len(str(r["id"])) for r in rows] + [12])
        for row in rows:
            answer = row["response"] if row["status"] == "ok" else row["error"]
            print(f"  {str(row['id']):<{width}} {row['task']:<17} {str(answer)[:60]!r}")
        if config.output.report:
            print(f"\nopen {report_path(config.output.path)} in a browser to see them with their pictures")
        print(TINY_NOTE)
    return code
