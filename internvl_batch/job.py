"""The batch job: check everything cheap first, skip what is already done, run the Ray pipeline, summarise.

Entry points: `jobs/caption.py` (for `ray job submit`), `internvl-batch run CONFIG`, `internvl-batch demo`.
Exit codes: 0 success; 1 the job ran but failed (pipeline failure, error fraction above
`output.max_error_fraction`, an input id without a result); 2 invalid configuration, unreadable model or
manifest, unwritable output.
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
from internvl_batch.model.loader import load_tokenizer, verify_weights
from internvl_batch.errors import format_row_error
from internvl_batch.results import completed_keys, new_run_id, prepare_output, read_results, write_summary
from internvl_batch.summary import RunStats
from internvl_batch.tasks import TaskError, TaskPrompter, template_fields

log = logging.getLogger("internvl_batch.job")

PACKAGES = ("internvl-batch", "torch", "transformers", "ray", "pyarrow", "pillow", "tokenizers", "s3fs", "decord", "pydantic")


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


def preflight(config: JobConfig) -> tuple[list[dict], dict]:
    """Everything that can fail cheaply, before Ray starts: model files, output, manifests."""
    path = resolve_model_path(config.model.path, config.model.cache_dir, weights=False, storage=config.storage)
    info = read_checkpoint_info(path)
    tokenizer = load_tokenizer(info)
    if info.layout == "original" and any(path.glob("*.safetensors")):
        # Names and shapes from the safetensors headers only; for Hub ids the weights arrive with the replicas.
        verify_weights(info, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))
    prepare_output(config.output, config.storage)
    rows, report = load_requests(config.input, config.storage, template_fields(config.task.template))
    log.info("read %d rows from %d manifest(s): %d malformed, %d blank lines skipped, %d duplicate ids",
             report.rows, len(report.files), report.malformed_rows, report.blank_lines, len(report.duplicate_ids))  # fmt: skip
    return rows, report.summary()


def assign_tasks(rows: list[dict], prompter: TaskPrompter) -> None:
    """Each row's tasks (its `task` column, the job's task, or task.tasks), decided once on the driver so that
    resume can skip exactly the (id, task) pairs that are done. A row naming an unknown task gets an error."""
    for row in rows:
        try:
            row["tasks"] = prompter.tasks_for(row.get("task"), row.get("question"))
        except TaskError as exc:
            row["tasks"] = [row.get("task")]
            row["error"] = row.get("error") or format_row_error("task", exc)


def init_ray(config: JobConfig) -> float:
    import ray

    if not ray.is_initialized():
        ray.init(address=config.ray.address, log_to_driver=True)
    choice = config.resources.accelerator
    if choice == "cpu":
        return 0
    gpus = ray.cluster_resources().get("GPU", 0)
    if choice == "gpu":
        if gpus < config.model.gpus_per_replica:
            log.warning("the cluster has %g GPUs now; replicas wait for the autoscaler to add GPU nodes", gpus)
        return config.model.gpus_per_replica
    if not gpus:
        log.warning("no GPUs in the Ray cluster: model replicas run on CPU (set resources.accelerator=gpu on "
                    "clusters whose GPU workers scale from zero)")  # fmt: skip
        return 0
    if gpus < config.model.gpus_per_replica:
        raise ConfigError(f"model.gpus_per_replica={config.model.gpus_per_replica} but the cluster has {gpus:g} GPUs")
    return config.model.gpus_per_replica


def run_pipeline(config: JobConfig, rows: list[dict], run_id: str, stats: RunStats) -> None:
    from internvl_batch.pipeline import build_dataset

    num_gpus = init_ray(config)
    dataset = build_dataset(config, rows, model_display_name(config.model.path), num_gpus, run_id)
    try:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            stats.add(batch)
    except Exception as exc:  # noqa: BLE001 - a pipeline failure ends the job with its cause
        log.exception("the pipeline failed")
        raise JobFailed(f"the pipeline failed after writing {stats.rows} rows: {root_cause(exc)}") from None


def run_job(config: JobConfig) -> dict:
    """Run the whole job; returns the summary (also written to `<output>/_summary.json`)."""
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    run_id = new_run_id()
    rows, manifest_report = preflight(config)
    assign_tasks(rows, TaskPrompter(config.task, config.generation.max_new_tokens))
    expected = [(r["id"], t) for r in rows for t in r["tasks"]]
    done = completed_keys(config.output.path, config.storage, config.output.retry_errors) if config.output.resume else set()
    todo = []
    for row in rows:
        row["tasks"] = [t for t in row["tasks"] if (row["id"], t) not in done]
        if row["tasks"]:
            todo.append(row)
    results_todo = sum(len(r["tasks"]) for r in todo)
    if done:
        log.info("resuming: %d of %d results already exist; %d to produce", len(expected) - results_todo, len(expected), results_todo)
    stats = RunStats(results_todo)
    if todo:
        run_pipeline(config, todo, run_id, stats)
    stats.log_progress()

    current = read_results(config.output.path, config.storage, columns=["status"])
    have = set(zip(current.column("id").to_pylist(), current.column("task").to_pylist()))
    missing = [f"{i} ({t})" for i, t in expected if (i, t) not in have]
    summary = {
        "run_id": run_id,
        "status": "ok",
        "model": model_display_name(config.model.path),
        "rows_input": len(rows),
        "results_expected": len(expected),
        "rows_already_done": len(expected) - results_todo,
        **stats.as_dict(time.monotonic() - t0),
        "one_row_per_input": not missing,
        "missing_ids": missing[:10],
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "manifest": manifest_report,
        "config": config.model_dump(mode="json"),
        "versions": package_versions(),
    }
    problems = []
    if missing:
        problems.append(f"{len(missing)} input ids have no result (e.g. {missing[:3]})")
    if stats.rows and stats.failed / stats.rows > config.output.max_error_fraction:
        problems.append(
            f"{stats.failed} of {stats.rows} rows failed ({stats.failed / stats.rows:.1%}), above "
            f"output.max_error_fraction={config.output.max_error_fraction:g}; errors by stage: {dict(stats.errors_by_stage)}"
        )
    if problems:
        summary["status"] = "failed"
        summary["problems"] = problems
    where = write_summary(config.output.path, config.storage, summary)
    print_summary(summary, where)
    if problems:
        raise JobFailed("; ".join(problems))
    return summary


def print_summary(summary: dict, where: str) -> None:
    lines = [
        f"rows: {summary['rows_ok']} ok, {summary['rows_failed']} failed this run; "
        f"{summary['rows_already_done']} already done; {summary['rows_input']} in manifest(s)",
        f"errors by stage: {summary['errors_by_stage'] or 'none'}",
        f"images: {summary['images']} ({summary['images_per_s']:.2f}/s), output tokens: {summary['output_tokens']} "
        f"({summary['output_tokens_per_s']:.1f}/s), wall time {summary['wall_time_s']:.1f} s",
        f"status: {summary['status']}; summary written to {where}",
    ]
    print("\n".join(["== internvl-batch summary =="] + lines), flush=True)


def build_parser(prog: str = "caption") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run the InternVL batch job described by a config.")
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    add_run_options(parser)
    return parser


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set generation.max_new_tokens=64 (repeatable)")  # fmt: skip
    parser.add_argument("--no-resume", action="store_true", help="discard earlier results under the output path and start over")
    parser.add_argument("--retry-errors", action="store_true", help="also reprocess ids whose latest result is an error")


def overrides_from_args(args) -> list[str]:
    extra = (["output.resume=false"] if args.no_resume else []) + (["output.retry_errors=true"] if args.retry_errors else [])
    return list(args.overrides) + extra


def main(argv: list[str] | None = None, config: JobConfig | None = None) -> int:
    """Parse arguments (unless a config is given), run, and map failures to exit codes with one-line errors."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if config is None:
            args = build_parser().parse_args(argv)
            config = load_config(args.config, overrides_from_args(args))
        run_job(config)
        return 0
    except JobFailed as exc:
        print(f"internvl-batch: job failed: {exc}", file=sys.stderr)
        return 1
    except InternVLBatchError as exc:
        print(f"internvl-batch: error: {exc}", file=sys.stderr)
        return 2
