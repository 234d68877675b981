"""`export`: its parser and its command. Like `cli.py`'s commands, the command imports what it runs, so that
`--help` stays light."""

from __future__ import annotations

from internvl_batch.cli_compact import add_engine_options, add_storage_options

FORMATS = ("label-studio", "coco", "documents", "text")  # as export.formats.FORMATS (checked by a test)


def add_export_parser(sub, func) -> None:
    p = sub.add_parser(
        "export",
        help="export a job's results for Label Studio, COCO tools, or as OCR text per document",
        description="Write the current rows of a job's output (the latest run's row per id and task) in another "
        "tool's format. label-studio: one task per image with the answers as predictions (boxes in percent); "
        "coco: boxes as detection annotations (+ OUT.captions.json); documents: one JSONL/Parquet row per document "
        "(pages in order); text: one UTF-8 file per document under the folder --out. Error rows are left out and "
        "counted. Exit code: 0 written; 2 bad options, no results at OUTPUT, or an earlier export at --out.",
    )
    p.add_argument("output", help="the job's output path (local, s3://, gs://, az://)")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    p.add_argument(
        "--out",
        required=True,
        help="the file to write (label-studio, coco: .json; documents: .jsonl or .parquet) or, for text, a folder",
    )
    p.add_argument(
        "--max-tasks-per-file",
        type=int,
        default=10_000,
        help="tasks, images or documents per file (default 10000); more are written as OUT-00000.json, ...",
    )
    p.add_argument("--label-config", metavar="FILE", help="label-studio: also write the labeling config (XML) here")
    p.add_argument(
        "--url-prefix",
        help="label-studio: turn local media paths into URLs: PREFIX + the path (less --strip-prefix), e.g. "
        "'/data/local-files/?d=' for Label Studio's local files; s3://, gs:// and az:// are kept for its cloud storage",
    )
    p.add_argument("--strip-prefix", help="label-studio: remove this from the start of local paths first")
    p.add_argument(
        "--task",
        default="ocr",
        help="text, documents: the task whose answers are the text (default ocr; 'all' for every task)",
    )
    p.add_argument(
        "--page-separator",
        default="\f",
        help="text, documents: between a document's pages (default a form feed, as pdftotext); \\n escapes allowed",
    )
    p.add_argument(
        "--drop-orphans",
        action="store_true",
        help="leave out the results whose input the latest job run no longer had (the summary's results_orphaned)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export at --out (its shards too)")
    add_engine_options(p, "exported")
    add_storage_options(p)
    p.set_defaults(func=func)


def unescape(text: str) -> str:
    """`\\n`, `\\t`, `\\f` and `\\\\` typed on a command line as the characters they stand for."""
    table = {"n": "\n", "t": "\t", "f": "\f", "\\": "\\"}
    out, k = [], 0
    while k < len(text):
        if text[k] == "\\" and k + 1 < len(text) and text[k + 1] in table:
            out.append(table[text[k + 1]])
            k += 2
        else:
            out.append(text[k])
            k += 1
    return "".join(out)


def cmd_export(args) -> int:
    from internvl_batch.config import StorageConfig
    from internvl_batch.export.options import ExportOptions
    from internvl_batch.export.run import summary_line
    from internvl_batch.pipeline.export import export_output

    options = ExportOptions(
        format=args.format,
        out=args.out,
        storage=StorageConfig(endpoint_url=args.endpoint_url, anonymous=args.anonymous),
        url_prefix=args.url_prefix,
        strip_prefix=args.strip_prefix,
        max_items_per_file=args.max_tasks_per_file,
        label_config=args.label_config,
        page_separator=unescape(args.page_separator),
        task=None if args.task == "all" else args.task,
        drop_orphans=args.drop_orphans,
        overwrite=args.overwrite,
    )
    print(summary_line(args.output, export_output(args.output, options, args.engine, args.ray_address)))
    return 0
