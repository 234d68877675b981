"""The batch job: check everything cheap first, skip what is already done, run the Ray pipeline, summarise.

Entry points: `jobs/caption.py` (for `ray job submit`), `internvl-batch run CONFIG`, `internvl-batch demo`.
Exit codes: 0 success; 1 the job ran but failed (pipeline failure, error fraction above
`output.max_error_fraction`, an input id without a result); 2 invalid configuration, unreadable model or
manifest, unwritable output; 3 (`output.crashed_rows_exit_code`) it finished, but model replicas kept dying on
some rows, which are error rows; 130 interrupted (Ctrl-C, SIGINT): the result files written so far stay, and
the same command resumes from them (`interrupted_line`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone

import ray
import ray.data

from internvl_batch.config import JobConfig, PipelineConfig
from internvl_batch.config_loader import load_config
from internvl_batch.errors import InternVLBatchError, JobFailed
from internvl_batch.filesystems import fsspec_filesystem
from internvl_batch.fingerprint import RunFingerprint, check_config_change, done_rule, run_fingerprint, run_records
from internvl_batch.local_media import with_local_roots
from internvl_batch.manifest.files import input_files
from internvl_batch.manifest.scan import plan_waves
from internvl_batch.manifest.scan_report import manifest_report, resume_report
from internvl_batch.manifest.units import ManifestFile
from internvl_batch.model.bundle import ModelBundle
from internvl_batch.model.loader import verify_weights
from internvl_batch.model.locate import display_name
from internvl_batch.output_dir import new_run_id, prepare_output, record_run, write_summary
from internvl_batch.output_layout import run_record_path
from internvl_batch.passthrough import pinned_types, settle_types
from internvl_batch.pipeline.console import absorb_actor_restart_warning, quiet_ray_data
from internvl_batch.pipeline.crash_ledger import RemoteCrashLedger
from internvl_batch.pipeline.dataset import build_dataset, replica_gpus
from internvl_batch.pipeline.driver import interrupted_line, interruptible, ray_running, shut_down_ray
from internvl_batch.pipeline.prepass import load_done_keys, read_units, record_orphans, scan_manifests
from internvl_batch.pipeline.reading import ManifestDatasource
from internvl_batch.redact import install_log_redaction, redact_text
from internvl_batch.report import write_run_report
from internvl_batch.summary import CRASHED_ROWS, RunStats, package_versions, print_summary
from internvl_batch.tasks import template_fields

log = logging.getLogger("internvl_batch.job")

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process ended by Ctrl-C


class JobInterrupted(Exception):
    """Ctrl-C (KeyboardInterrupt) while the pipeline ran, with the result rows counted until then."""

    def __init__(self, rows: int) -> None:
        super().__init__(f"interrupted after {rows} result rows")
        self.rows = rows


def root_cause(exc: BaseException) -> str:
    """The innermost error's last line: Ray wraps actor and task failures in several layers. An inner error
    without a message is not it (Ray Data chains a bare `SystemException` to say where a failure happened)."""
    while (inner := getattr(exc, "cause", None) or exc.__cause__) is not None and str(inner).strip():
        exc = inner
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def check_model(config: PipelineConfig) -> ModelBundle:
    """The model's config and tokenizer load, and its weights' names and shapes match (safetensors headers)."""
    bundle = ModelBundle.load(config.model, config.storage)
    if bundle.info.layout == "original" and any(bundle.path.glob("*.safetensors")):
        # Names and shapes from the safetensors headers only; for Hub ids the weights arrive with the replicas.
        verify_weights(bundle.info, bundle.prompts.image_context_id)
    return bundle


def preflight(config: JobConfig, run_id: str | None = None) -> tuple[list[ManifestFile], RunFingerprint, list[dict]]:
    """Everything that can fail cheaply, before Ray starts: model files, manifest files and media roots (a
    listing), then the output (where `run_id`'s start is recorded with its config fingerprint: nothing is
    written there unless everything else is fine). Returns the input files, the run's fingerprint and the
    output's earlier run records."""
    bundle = check_model(config)
    files = input_files(config.input, config.storage, config.fetch.max_bytes)
    fingerprint = run_fingerprint(config, bundle.path, bundle.info.system_message)
    records = run_records(config.output.path, config.storage) if config.output.resume else []
    prepare_output(config.output, config.storage, run_id, {"config_fingerprint": fingerprint.record()})
    return files, fingerprint, records


def carried_columns(config: JobConfig) -> list[str]:
    """Manifest columns the pipeline carries: the pass-through ones and the task template's."""
    return list(dict.fromkeys([*config.input.passthrough_columns, *template_fields(config.task.template)]))


def init_ray(config: JobConfig) -> float:
    """Connect to (or start) Ray; returns the GPUs each model replica requests."""
    if not ray.is_initialized():
        ray.init(address=config.ray.address, log_to_driver=True)
    absorb_actor_restart_warning()  # else every run prints a Ray error line about actor arguments (console.py)
    return replica_gpus(config)


def run_pipeline(
    config: JobConfig, units, scan, done_ref, num_gpus: float, run_id: str, stats: RunStats, fingerprints: dict
) -> None:
    """The rows to do, in waves (`resources.wave_rows`): each wave is one Ray Data execution."""
    ledger = RemoteCrashLedger.start()  # the run's record of rows in flight on the model replicas
    waves = plan_waves(units, scan.totals, config.resources.wave_rows)
    interrupted = False
    try:
        with stats.ticking():  # a progress line every interval, also while no result file arrives
            for number, (wave, rows) in enumerate(waves, start=1):
                if len(waves) > 1:
                    log.info("wave %d of %d: %d rows to do from %d read units", number, len(waves), rows, len(wave))
                name = display_name(config.model.path)
                dataset = build_dataset(
                    config, wave, rows, scan, done_ref, name, num_gpus, run_id, ledger, fingerprints
                )
                try:
                    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                        stats.add(batch)
                except Exception as exc:  # a pipeline failure ends the job with its cause
                    log.exception("the pipeline failed")
                    raise JobFailed(f"the pipeline failed after writing {stats.rows} rows: {root_cause(exc)}") from None
    except KeyboardInterrupt:
        interrupted = True
        raise JobInterrupted(stats.rows) from None
    finally:
        if not interrupted:  # after Ctrl-C the run stops now: no waiting on the ledger actor
            stats.replica_crashes = ledger.stats().get("replica_crashes", 0)


def missing_results(config: JobConfig, units, scan, limit: int = 10) -> list[str]:
    """Up to `limit` (id, task) keys of the manifests without a result: a second distributed pass, made only
    when the counts say something is missing."""
    done_ref, _ = load_done_keys(
        config.model_copy(update={"output": config.output.model_copy(update={"retry_errors": False})})
    )
    rows = ray.data.read_datasource(ManifestDatasource(config, units, scan, done_ref)).take(limit)
    return [f"{row['id']} ({task})" for row in rows for task in row["tasks"]][:limit]


def run_job(config: JobConfig) -> dict:
    """Run the whole job; returns the summary (also written to `<output>/.internvl-batch/summary.json`). A run
    stopped after its start was recorded (a config change, an interrupt, a failed pipeline) has its record say so."""
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    run_id = new_run_id()
    files, fingerprint, records = preflight(config, run_id)
    try:
        return _run_recorded(config, run_id, started, t0, files, fingerprint, records)
    except BaseException as exc:
        close_record(config, run_id, exc)
        raise


def close_record(config: JobConfig, run_id: str, exc: BaseException) -> None:
    """The run's record, if it still says "running", gets the status the run ended with and its error line."""
    try:
        fs, path = fsspec_filesystem(config.output.path, config.storage)
        with fs.open(run_record_path(path, run_id), "r") as f:
            record = json.load(f)
        if record.get("status") != "running":
            return  # the run's summary is its record
        stopped = isinstance(exc, (KeyboardInterrupt, JobInterrupted))
        record.update(
            status="interrupted" if stopped else "stopped", finished_at=datetime.now(timezone.utc).isoformat()
        )
        record["error"] = redact_text(str(exc) or "interrupted" if stopped else f"{type(exc).__name__}: {exc}")
        record_run(config.output.path, config.storage, record)
    except Exception as problem:  # noqa: BLE001 - never hides why the run stopped
        log.warning("the run record was not updated: %s: %s", type(problem).__name__, problem)


def _run_recorded(config, run_id, started, t0, files, fingerprint, records) -> dict:
    config = with_local_roots(config, [f.uri for f in files if not f.media], [f.uri for f in files if f.media])
    num_gpus = init_ray(config)
    t_scan = time.monotonic()
    units = read_units(config, files)
    rule = done_rule(config, fingerprint, records)
    done_ref, results = load_done_keys(config, rule) if config.output.resume else (None, 0)
    scan = scan_manifests(config, units, done_ref, carried_columns(config))
    stale = check_config_change(config, scan, fingerprint, records)
    record_orphans(config, done_ref, scan, run_id)
    if config.output.resume:  # the output's result files fix the pass-through columns' types (passthrough.py)
        pinned = pinned_types(config.output.path, config.storage, config.input.passthrough_columns)
        scan.passthrough_types = settle_types(scan.passthrough_types, pinned)
    log.info(
        "manifests scanned in %.1f s (%d read units; started %.1f s after the job)",
        time.monotonic() - t_scan,
        len(units),
        t_scan - t0,
    )
    report = manifest_report(files, scan.units, scan.totals, config.input.duplicate_ids)
    totals = scan.totals
    if totals.done_keys:
        log.info(
            "resuming: %d of %d results already exist; %d to produce", totals.done_keys, totals.keys, totals.todo_keys
        )
    stats = RunStats(totals.todo_keys, started=t0)
    if totals.todo_keys:
        run_pipeline(config, units, scan, done_ref, num_gpus, run_id, stats, fingerprint.tasks)
    wall = time.monotonic() - t0
    stats.log_progress(wall)  # the last line: the same rate as the summary's rows_per_s

    # Every key expected was written exactly once iff the counts and the key checksums agree (keys.py).
    complete = stats.results == totals.todo_keys and stats.checksum == totals.todo_checksum
    missing = [] if complete else missing_results(config, units, scan)
    summary = {
        "run_id": run_id,
        "status": "ok",
        "model": display_name(config.model.path),
        "rows_input": totals.rows,
        "results_expected": totals.keys,
        "rows_already_done": totals.done_keys,
        **resume_report(totals, results, stale, config.output.on_config_change == "keep"),
        "config_fingerprint": fingerprint.record(),
        **stats.as_dict(wall),
        "one_row_per_input": not missing,
        "missing_ids": missing,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "manifest": report,
        "config": config.model_dump(mode="json"),
        "versions": package_versions(),
    }
    problems = []
    if missing:
        problems.append(f"input ids have no result (e.g. {missing[:3]})")
    if stats.rows and stats.failed / stats.rows > config.output.max_error_fraction:
        problems.append(
            f"{stats.failed} of {stats.rows} rows failed ({stats.failed / stats.rows:.1%}), above "
            f"output.max_error_fraction={config.output.max_error_fraction:g}; errors by stage: {dict(stats.errors_by_stage)}"
        )
    if problems:
        summary["status"] = "failed"
        summary["problems"] = problems
    elif summary["rows_crashed"]:
        summary["status"] = CRASHED_ROWS
    where = write_summary(config.output.path, config.storage, summary)
    print_summary(summary, where)
    if config.output.report:
        write_run_report(config)
    if problems:
        raise JobFailed("; ".join(problems))
    return summary


def exit_code(summary: dict, config: JobConfig) -> int:
    """0, or `output.crashed_rows_exit_code` for a run whose only trouble is rows that kill model replicas."""
    return config.output.crashed_rows_exit_code if summary["status"] == CRASHED_ROWS else 0


def main(
    config: JobConfig | None = None,
    verbose: bool = False,
    config_path: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> int:
    """Run the job on `config`, or on the config loaded from `config_path` with `--set` style `overrides`
    (loading errors are exit code 2 with one line, like every other configuration problem), and map failures to
    exit codes with one-line errors. Command-line parsing is `cli.py`'s. `verbose`: Ray Data's progress bars and
    execution logs on the console (`pipeline/console.py`). Ray is shut down before returning when this call
    started it (`pipeline/driver.py`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    started_ray = not ray_running()
    code = 2
    try:
        if config is None:
            config = load_config(config_path, list(overrides))
        quiet_ray_data(verbose)
        with interruptible():
            summary = run_job(config)
        if summary["status"] == CRASHED_ROWS:
            print(
                f"internvl-batch: finished, but {summary['rows_crashed']} rows kept crashing model replicas: they "
                "are error rows (generate: ReplicaCrashed)",
                file=sys.stderr,
            )
        code = exit_code(summary, config)
    except (JobInterrupted, KeyboardInterrupt) as exc:
        print(interrupted_line(config, getattr(exc, "rows", None)), file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    except JobFailed as exc:
        print(f"internvl-batch: job failed: {redact_text(str(exc))}", file=sys.stderr)
        code = 1
    except InternVLBatchError as exc:
        print(f"internvl-batch: error: {redact_text(str(exc))}", file=sys.stderr)
        code = 2
    finally:
        if started_ray:
            shut_down_ray(code)
    return code
