"""The `internvl-batch` command line: argument parsing only; each command lives in its own module.

Exit codes: 0 success; 1 a failure the command reports (`run`/`demo`: the job failed; `inspect`: a file could
not be read; `plan`: the model does not fit, not even one row per batch); 2 invalid arguments, configuration
or input; 3 `run`/`demo` finished with rows that kept crashing model replicas; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from internvl_batch.cli_compact import add_compact_parser, add_report_parser, summary_line
from internvl_batch.cli_export import add_export_parser, cmd_export
from internvl_batch.errors import InternVLBatchError
from internvl_batch.redact import install_log_redaction, redact_text

EXIT_INTERRUPTED = 130  # as job.EXIT_INTERRUPTED (not imported: the job module brings Ray)


def _add_preprocess_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("preprocessing (the same options as the job)")
    group.add_argument("--model", help="checkpoint directory whose config supplies the tiling defaults")
    group.add_argument("--max-num", type=int, help="most tiles per image (default: checkpoint's max_dynamic_patch, 12)")
    group.add_argument(
        "--min-num", type=int, help="fewest tiles per image (default: checkpoint's min_dynamic_patch, 1)"
    )
    group.add_argument("--no-thumbnail", action="store_true", help="do not append the thumbnail tile")
    group.add_argument("--no-exif-transpose", action="store_true", help="ignore EXIF orientation (as the reference)")
    group.add_argument("--max-pixels", type=int, help="refuse images with more pixels than this")
    group.add_argument(
        "--fast",
        action="store_true",
        help="fast mode (reduced-scale JPEG decode, torch resize): same grids, pixels differ slightly",
    )


def cmd_inspect(args) -> int:
    from internvl_batch.config import PreprocessConfig
    from internvl_batch.inspect_media import VideoOptions, preprocessor_for, run_inspect

    options = PreprocessConfig(
        max_num=args.max_num,
        min_num=args.min_num,
        use_thumbnail=False if args.no_thumbnail else None,
        exif_transpose=not args.no_exif_transpose,
        mode="fast" if args.fast else "exact",
        **({"max_pixels": args.max_pixels} if args.max_pixels else {}),
    )
    pre, tokens_per_tile = preprocessor_for(options, args.model)
    save = Path(args.save_tiles) if args.save_tiles else None
    video = VideoOptions(args.num_segments, tuple(args.bound) if args.bound else None)
    return run_inspect([Path(p) for p in args.images], pre, video, tokens_per_tile, save, args.json)


def cmd_make_tiny_checkpoint(args) -> int:
    from internvl_batch.model.tiny import make_tiny_checkpoint

    out = make_tiny_checkpoint(
        args.directory, layout=args.layout, seed=args.seed, shards=args.shards, llm=args.llm, vision=args.vision
    )
    print(
        f"wrote a tiny random-weight InternVL 2.5 checkpoint ({args.layout} layout, {args.llm} LLM, "
        f"{args.vision} vision tower, seed {args.seed}) to {out}"
    )
    return 0


def cmd_plan(args) -> int:
    from internvl_batch.model.plan import plan_replica, render

    plan = plan_replica(
        args.model, args.gpus, args.gpu_mem, args.dtype, args.tiles, args.prompt_tokens, args.max_new_tokens
    )
    print(render(plan))
    return 0 if plan.fits else 1


def cmd_run(args) -> int:
    from internvl_batch.job import main as job_main

    return job_main(config_path=args.config, overrides=overrides_from_args(args), verbose=_verbose(args))


def cmd_demo(args) -> int:
    from internvl_batch.demo import run_demo

    overrides = list(args.overrides) + (["output.force=true"] if args.force else [])
    return run_demo(args.output, overrides, _verbose(args))


def _verbose(args) -> bool:
    # `internvl-batch -v run ...` and `internvl-batch run ... -v` alike
    return bool(args.verbose or getattr(args, "run_verbose", False))


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        dest="run_verbose",  # not `verbose`: a subcommand's default would overwrite `internvl-batch -v`'s value
        action="store_true",
        help="debug logging, and Ray Data's progress bars and execution logs (off otherwise: the job logs one "
        "progress line every 30 s)",
    )


def cmd_report(args) -> int:
    from internvl_batch.config import StorageConfig
    from internvl_batch.report import write_report

    storage = StorageConfig(endpoint_url=args.endpoint_url, anonymous=args.anonymous)
    where = write_report(args.output, storage, args.out, args.sample, args.max_files, local_roots=args.local_roots)
    print(f"report written to {where}")
    return 0


def cmd_compact(args) -> int:
    from internvl_batch.config import StorageConfig
    from internvl_batch.pipeline.compaction import compact

    storage = StorageConfig(endpoint_url=args.endpoint_url, anonymous=args.anonymous)
    summary = compact(
        args.output, storage, args.target_rows, args.target_bytes, args.engine, args.ray_address, args.drop_orphans
    )
    print(summary_line(args.output, summary))
    return 0


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("internvl-batch")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="internvl-batch", description="InternVL 2.5 batch inference on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show how images are tiled (videos: which frames) and what they cost in tokens")
    p.add_argument(
        "images", nargs="+", metavar="FILE", help="image or video files (videos by extension: .mp4, .mov, ...)"
    )
    _add_preprocess_options(p)
    p.add_argument(
        "--num-segments", type=int, default=8, help="frames sampled per video (default 8, as the model card)"
    )
    p.add_argument(
        "--bound", type=float, nargs=2, metavar=("START_S", "END_S"), help="sample frames from this span of a video"
    )
    p.add_argument(
        "--save-tiles", metavar="DIR", help="write each tile as DIR/NN.png (one subfolder per image when several)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per image instead of a table")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("make-tiny-checkpoint", help="write a tiny random-weight checkpoint in the real layout")
    p.add_argument("directory", help="output directory (must be empty or absent)")
    p.add_argument(
        "--layout", choices=["original", "hf"], default="original", help="checkpoint layout (default: original)"
    )
    p.add_argument("--seed", type=int, default=0, help="weight seed (default 0); same seed, same files")
    p.add_argument("--shards", type=int, default=2, help="safetensors shards for the original layout (default 2)")
    p.add_argument(
        "--llm", choices=["qwen2", "internlm2"], default="qwen2", help="language model layout (default qwen2)"
    )
    p.add_argument(
        "--vision",
        choices=["300m-style", "6b-style"],
        default="300m-style",
        help="vision tower layout: InternViT-300M (LayerNorm, qkv bias) or -6B (RMSNorm, qk norm)",
    )
    p.set_defaults(func=cmd_make_tiny_checkpoint)

    p = sub.add_parser(
        "plan",
        help="memory per GPU of one model replica on k GPUs, and the largest batch that fits",
        description="Memory per GPU of one model replica on k GPUs, and the largest batch that fits. Exit code: "
        "0 it fits; 1 it does NOT fit (the weights, or not even one row per batch); 2 an unknown model.",
    )
    p.add_argument(
        "model", help="an InternVL 2.5 Hub id (e.g. OpenGVLab/InternVL2_5-78B; known offline) or a checkpoint directory"
    )
    p.add_argument("--gpus", type=int, default=1, help="GPUs per replica (default 1)")
    p.add_argument("--gpu-mem", type=float, default=80, help="memory per GPU in GiB (default 80)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    p.add_argument("--tiles", type=int, default=13, help="image tiles per row (default 13: a 4:3 photo at max_num 12)")
    p.add_argument("--prompt-tokens", type=int, default=64, help="text tokens per prompt (default 64)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="generated tokens per row (default 256)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run the batch job described by a config on Ray (local unless an address is set)")
    p.add_argument("config", help="YAML config (see configs/)")
    add_run_options(p)
    _add_verbose(p)
    p.set_defaults(func=cmd_run)

    add_report_parser(sub, cmd_report)
    add_compact_parser(sub, cmd_compact)
    add_export_parser(sub, cmd_export)

    p = sub.add_parser("demo", help="run the job on the bundled samples with a tiny random-weight checkpoint")
    p.add_argument("--output", default="outputs/demo", help="output directory (default outputs/demo)")
    add_set_option(p, "override a field of the demo config (repeatable)")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into an output directory that holds files the job did not write (only its own are deleted)",
    )
    _add_verbose(p)
    p.set_defaults(func=cmd_demo)
    return parser


# --- options of the job's runs, shared by `run` and `jobs/caption.py` (`ray job submit`) -------------------------


def caption_parser() -> argparse.ArgumentParser:
    """The options of `jobs/caption.py` (`ray job submit ... -- python jobs/caption.py --config C`)."""
    parser = argparse.ArgumentParser(prog="caption", description="Run the InternVL batch job described by a config.")
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
    """`--set` values, then the flags as the config fields they stand for."""
    extra = (
        (["output.resume=false"] if args.no_resume else [])
        + (["output.retry_errors=true"] if args.retry_errors else [])
        + (["output.force=true"] if getattr(args, "force", False) else [])
    )
    return list(args.overrides) + extra


def caption_main(argv: list[str] | None = None) -> int:
    """`jobs/caption.py`: parse its options and run the job (`job.main`: exit codes, one-line errors)."""
    from internvl_batch.job import main as job_main

    args = caption_parser().parse_args(argv)
    return job_main(config_path=args.config, overrides=overrides_from_args(args), verbose=args.verbose)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    install_log_redaction()
    try:
        return args.func(args)
    except (InternVLBatchError, FileExistsError, ValueError) as exc:
        print(f"internvl-batch {args.command}: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # `run` and `demo` say what was kept themselves (job.main)
        print(f"internvl-batch {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
