"""The batch job: check everything cheap first, then run the Ray pipeline, then summarise.

Entry points: `jobs/caption.py` (for `ray job submit`), `internvl-batch run CONFIG`, `internvl-batch demo`.
Exit codes: 0 success, 1 the job ran but failed, 2 invalid configuration / unreadable model or manifest.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from internvl_batch.config import JobConfig
from internvl_batch.config_loader import load_config
from internvl_batch.errors import ConfigError, InternVLBatchError
from internvl_batch.manifest import load_requests
from internvl_batch.model.checkpoint import read_checkpoint_info, resolve_model_path
from internvl_batch.model.loader import load_tokenizer, safetensors_files
from internvl_batch.results import prepare_output, read_output_columns, summarize, write_summary

log = logging.getLogger("internvl_batch.job")

PACKAGES = ("internvl-batch", "torch", "transformers", "ray", "pyarrow", "pillow", "tokenizers", "s3fs", "pydantic")


class JobFailed(InternVLBatchError):
    """The pipeline ran but the job as a whole failed."""


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def model_display_name(path: str) -> str:
    """What the output's `model` column says: a Hub id as given, a local checkpoint by its directory name."""
    local = Path(path).expanduser()
    return local.resolve().name if local.exists() else path


def root_cause(exc: BaseException) -> str:
    """The innermost error's last line: Ray wraps actor and task failures in several layers."""
    while getattr(exc, "cause", None) is not None or exc.__cause__ is not None:
        exc = getattr(exc, "cause", None) or exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def preflight(config: JobConfig) -> tuple[str, list[dict], dict]:
    """Everything that can fail cheaply, before Ray starts: model files, output, manifests."""
    path = resolve_model_path(config.model.path, weights=False)
    info = read_checkpoint_info(path)
    load_tokenizer(info)
    if path.is_dir() and (path / "config.json").is_file() and info.layout == "original":
        safetensors_files(path)  # weight files present (for Hub ids they arrive with the GPU workers)
    prepare_output(config.output, config.storage)
    rows, report = load_requests(config.input, config.storage)
    log.info("read %d rows from %d manifest(s): %d malformed, %d blank lines skipped, %d duplicate ids",
             report.rows, len(report.files), report.malformed_rows, report.blank_lines, len(report.duplicate_ids))  # fmt: skip
    return model_display_name(config.model.path), rows, report.summary()


def init_ray(config: JobConfig):
    import ray

    if not ray.is_initialized():
        ray.init(address=config.ray.address, log_to_driver=True)
    gpus = ray.cluster_resources().get("GPU", 0)
    if not gpus:
        log.info("no GPUs in the Ray cluster: model replicas run on CPU")
        return 0
    if gpus < config.model.gpus_per_replica:
        raise ConfigError(f"model.gpus_per_replica={config.model.gpus_per_replica} but the cluster has {gpus:g} GPUs")
    return config.model.gpus_per_replica


def run_job(config: JobConfig) -> dict:
    """Run the whole job; returns the summary (also written to `<output>/_summary.json`)."""
    from internvl_batch.pipeline import build_dataset, write_output

    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    model_name, rows, manifest_report = preflight(config)
    if rows:
        num_gpus = init_ray(config)
        try:
            write_output(build_dataset(config, rows, model_name, num_gpus), config)
        except Exception as exc:  # noqa: BLE001 - a pipeline failure ends the job with its cause
            log.exception("the pipeline failed")
            raise JobFailed(f"the pipeline failed: {root_cause(exc)}") from None
    table = read_output_columns(config.output, config.storage, ["id", "status", "error", "media", "num_tiles", "num_output_tokens"])
    summary = summarize(table, [r["id"] for r in rows], time.monotonic() - t0)
    summary.update(
        status="ok" if summary["one_row_per_input"] else "failed",
        model=model_name,
        started_at=started.isoformat(),
        finished_at=datetime.now(timezone.utc).isoformat(),
        manifest=manifest_report,
        config=config.model_dump(mode="json"),
        versions=package_versions(),
    )
    where = write_summary(config.output, config.storage, summary)
    print_summary(summary, where)
    if not summary["one_row_per_input"]:
        raise JobFailed(f"output rows do not match input rows one to one (missing e.g. {summary['missing_ids']})")
    return summary


def print_summary(summary: dict, where: str) -> None:
    lines = [
        f"rows: {summary['rows_ok']} ok, {summary['rows_failed']} failed, {summary['rows_input']} in manifest(s)",
        f"errors by stage: {summary['errors_by_stage'] or 'none'}",
        f"images: {summary['images']} ({summary['images_per_s']:.2f}/s), output tokens: {summary['output_tokens']} "
        f"({summary['output_tokens_per_s']:.1f}/s), wall time {summary['wall_time_s']:.1f} s",
        f"summary written to {where}",
    ]
    print("\n".join(["== internvl-batch summary =="] + lines), flush=True)


def build_parser(prog: str = "caption") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run the InternVL batch job described by a config.")
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set generation.max_new_tokens=64 (repeatable)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None, config: JobConfig | None = None) -> int:
    """Parse arguments (unless a config is given), run, and map failures to exit codes with one-line errors."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if config is None:
            args = build_parser().parse_args(argv)
            config = load_config(args.config, args.overrides)
        run_job(config)
        return 0
    except JobFailed as exc:
        print(f"internvl-batch: job failed: {exc}", file=sys.stderr)
        return 1
    except InternVLBatchError as exc:
        print(f"internvl-batch: error: {exc}", file=sys.stderr)
        return 2
