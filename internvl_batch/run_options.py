"""The job's command-line options, shared by `jobs/caption.py` (`ray job submit`) and `internvl-batch run`."""

from __future__ import annotations

import argparse


def build_parser(prog: str = "caption") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run the InternVL batch job described by a config.")
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Ray Data's progress bars and execution logs too"
    )
    add_run_options(parser)
    return parser


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`--set KEY=VALUE` (repeatable), collected in `overrides`: the run commands and the demo share it."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    add_set_option(parser, "override a config field, e.g. --set generation.max_new_tokens=64 (repeatable)")
    parser.add_argument(
        "--no-resume", action="store_true", help="discard earlier results under the output path and start over"
    )
    parser.add_argument(
        "--retry-errors", action="store_true", help="also reprocess ids whose latest result is an error"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into an output directory that holds files this job did not write (output.force=true); only "
        "the job's own files are ever deleted, and an empty path, a filesystem root or the home directory are "
        "refused regardless",
    )


def overrides_from_args(args) -> list[str]:
    extra = (
        (["output.resume=false"] if args.no_resume else [])
        + (["output.retry_errors=true"] if args.retry_errors else [])
        + (["output.force=true"] if getattr(args, "force", False) else [])
    )
    return list(args.overrides) + extra
