"""The parsers of the commands that work on a job's output (`report`, `compact`), and `compact`'s summary line.
Argument parsing only (`cli.py` runs the commands); nothing of ours is imported, so `--help` stays light."""

from __future__ import annotations

import argparse


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint of the output and media (default AWS)")
    parser.add_argument("--anonymous", action="store_true", help="unsigned requests (public buckets)")


def add_report_parser(sub, func) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a job's output (samples, failures, plots)")
    p.add_argument("output", help="the job's output path (local, s3://, gs://, az://)")
    p.add_argument("--out", help="where to write the page (default OUTPUT/.internvl-batch/report.html)")
    p.add_argument("--sample", type=int, default=12, help="ok rows per task in the gallery (default 12)")
    p.add_argument(
        "--max-files", type=int, default=200, help="result files read at most; more are sampled evenly (default 200)"
    )
    add_storage_options(p)
    p.add_argument(
        "--local-root",
        dest="local_roots",
        action="append",
        metavar="DIR",
        help="show local media (paths, file:// URIs) only from under DIR (repeatable); default: the directories "
        "the output's latest run was allowed to read local media from (its summary), none without a record",
    )
    p.set_defaults(func=func)


def add_compact_parser(sub, func) -> None:
    p = sub.add_parser(
        "compact",
        help="rewrite a job's output as a few large result files sorted by id, without superseded rows",
        description="Rewrite the current rows of a job's output (the latest run's row per id and task, as every "
        "reader of the output sees them) as a few large result files sorted by id; rows of earlier runs that later "
        "runs superseded are dropped. Readers see the same rows throughout; a compaction cut short is finished by "
        "running the command again. Exit code: 0 done; 2 no output (or no result files) at the path.",
    )
    p.add_argument("output", help="the job's output path (local, s3://, gs://, az://)")
    p.add_argument("--target-rows", type=int, help="rows per new file at most, about (default 1000000)")
    p.add_argument(
        "--target-bytes",
        type=int,
        help="uncompressed bytes per new file at most, about (default 536870912: 512 MiB)",
    )
    p.add_argument(
        "--drop-orphans",
        action="store_true",
        help="also leave out the results whose input the latest job run no longer had (objects deleted from a "
        "media root, rows removed from a manifest; the summary's results_orphaned)",
    )
    add_engine_options(p, "compacted")
    add_storage_options(p)
    p.set_defaults(func=func)


def add_engine_options(parser: argparse.ArgumentParser, done: str) -> None:
    """`--local` / `--ray` (`engine`: local, ray, or auto) and `--ray-address`, for a command whose work is
    `done` ("compacted") in this process or on Ray."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", dest="engine", action="store_const", const="local", help="in this process")
    where.add_argument("--ray", dest="engine", action="store_const", const="ray", help="as Ray tasks")
    parser.set_defaults(engine="auto")
    parser.add_argument(
        "--ray-address",
        help="the Ray cluster for --ray (default: RAY_ADDRESS, else a new local one); without --ray or --local, "
        f"outputs of more than 1 GiB of result files are {done} on Ray, smaller ones in this process",
    )


def summary_line(output: str, summary: dict) -> str:
    """`compact`'s one line: files before -> after, rows kept and dropped."""
    return (
        f"compacted {output}: {summary['files_before']} result files -> {summary['files_after']}, "
        f"{summary['rows_kept']} rows kept, {summary['rows_dropped']} superseded rows dropped "
        f"(run {summary['run_id']})"
    )
