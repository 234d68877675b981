"""An export of a job's output (`pipeline.export.export_output` runs it): the steps (read a chunk of files into
partitions, make a partition's items, write them) and the one-process loop; `pipeline/export.py` runs the same
steps as Ray tasks.

In this process the rows of a chunk of files are cut into partitions by document id; with more than one
partition each part is spilled to a temporary Parquet file, then each partition is read back whole, its current
rows made into items and the items written in shards, one shard held at a time. Memory: a chunk of files, or
one partition (`rows.PARTITION_ROWS`, `PARTITION_BYTES`), and a slice of a partition as Python objects, never
the output.
"""

from __future__ import annotations

import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

from internvl_batch.errors import ConfigError
from internvl_batch.export.formats import Format, format_named
from internvl_batch.export.label_studio import label_config
from internvl_batch.export.options import SHOWN_FILES, ExportCounts, ExportOptions
from internvl_batch.export.rows import group_slices, partition_rows, plan_chunks, split_chunk
from internvl_batch.export.writers import ShardWriter, check_destination, document_file_name, shard_pattern
from internvl_batch.filesystems import is_local, local_path
from internvl_batch.keys import KeySet
from internvl_batch.orphans import orphan_keys
from internvl_batch.output_dir import data_path, write_output_file
from internvl_batch.output_layout import META_DIR


def prepare(output_path: str, options: ExportOptions) -> tuple[Format, list, int, int, KeySet | None]:
    """Check the options and the destination (ConfigError) -> (format, chunks, partitions, result bytes,
    orphans to leave out or None)."""
    fmt = format_named(options.format)
    fmt.check(options)
    for folder in (data_path(output_path), f"{output_path.rstrip('/')}/{META_DIR}"):
        for target in (options.out, options.label_config):
            if target and _inside(target, folder):
                raise ConfigError(f"{target} is inside the job's output ({folder}): write the export elsewhere")
    chunks, partitions, size = plan_chunks(output_path, options.storage)
    pattern = None if fmt.encoder is None else shard_pattern(options.out, fmt.variants)
    check_destination(options.out, options.storage, options.overwrite, pattern)
    orphans = orphan_keys(output_path, options.storage) if options.drop_orphans else None
    return fmt, chunks, partitions, size, orphans


def _inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or below it (local paths resolved: `data/` must hold results only)."""
    if is_local(path) and is_local(folder):
        path, folder = os.path.realpath(local_path(path)), os.path.realpath(local_path(folder))
    path, folder = path.rstrip("/"), folder.rstrip("/")
    return path == folder or path.startswith(folder + "/")


def export_partition(
    fmt: Format, tables: list[pa.Table], options: ExportOptions, orphans, writer: ShardWriter | None
) -> ExportCounts:
    """A partition's rows (from every chunk) -> its items, a slice of whole groups at a time, given to `writer`
    (or written as text files: `writer` None); its counts (text files: their number and first names)."""
    total = ExportCounts()
    for part in group_slices(partition_rows(tables, orphans)):
        items, counts = fmt.items(part, options)
        if writer is not None:
            writer.add(items)
        else:
            files = write_texts(items, options)
            counts.counts["files"] += len(files)
            counts.files = files[:SHOWN_FILES]
        total = total + counts
    return total


def write_texts(documents: list[dict], options: ExportOptions) -> list[str]:
    """One UTF-8 text file per document under the folder `options.out`."""
    task = options.task is None  # every task: the task is part of the name
    return [
        write_output_file(
            f"{options.out.rstrip('/')}/{document_file_name(d['id'], d['task'] if task else None)}",
            options.storage,
            d["text"],
        )
        for d in documents
    ]


def local_export(output_path: str, options: ExportOptions) -> ExportCounts:
    """The export in this process (see the module's docstring)."""
    fmt, chunks, partitions, _, orphans = prepare(output_path, options)
    task = options.task if fmt.by_task else None
    writer = (
        None
        if fmt.encoder is None
        else ShardWriter(options.out, options.storage, fmt.encoder(options), options.max_items_per_file)
    )
    total = ExportCounts()

    def emit(tables: list[pa.Table]) -> None:
        nonlocal total
        total = total + export_partition(fmt, tables, options, orphans, writer)

    if partitions == 1:
        emit([split_chunk(output_path, options.storage, first, files, 1, task)[0] for first, files in chunks])
    else:
        with tempfile.TemporaryDirectory(prefix="internvl-export-") as spill:
            for number, (first, files) in enumerate(chunks):
                for p, table in enumerate(split_chunk(output_path, options.storage, first, files, partitions, task)):
                    if table.num_rows:
                        os.makedirs(f"{spill}/{p}", exist_ok=True)
                        pq.write_table(table, f"{spill}/{p}/{number:08d}.parquet")
            for p in range(partitions):
                folder = f"{spill}/{p}"
                names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
                emit([pq.read_table(f"{folder}/{name}") for name in names])
    if writer is not None:
        files = writer.close()
        total.files, total.counts["files"] = files[:SHOWN_FILES], len(files)
    return total


def finish(fmt: Format, options: ExportOptions, counts: ExportCounts) -> dict:
    """After the items: the labeling config (label-studio, `label_config`), and the export's summary."""
    if options.label_config and fmt.name == "label-studio":
        write_output_file(options.label_config, options.storage, label_config(counts.labels, counts.text_tasks))
    return {"format": fmt.name, "out": options.out, **dict(counts.counts), "first_files": counts.files}


SKIPPED = {  # the summary's counts of rows a format has no place for, as the summary line says them
    "skipped_not_image": "rows not of one image (video, several images, PDF pages)",
    "skipped_not_document": "rows not documents (video, several images)",
    "skipped_text_rows": "text rows other than captions",
    "skipped_without_size": "images without a size",
}


def summary_line(output_path: str, summary: dict) -> str:
    """`export`'s one line: what was written, what was left out."""
    noun = {"label-studio": "tasks", "coco": "images", "documents": "documents", "text": "documents"}[summary["format"]]
    wrote = [f"{summary.get('items', 0)} {noun}"]
    if summary["format"] in ("label-studio", "coco"):
        wrote.append(f"{summary.get('boxes', 0)} boxes")
    if summary["format"] in ("documents", "text"):
        wrote.append(f"{summary.get('pages_failed', 0)} failed pages marked")
    left = [f"{summary.get('error_rows', 0)} error rows"]
    left += [f"{v} {SKIPPED.get(k, k)}" for k, v in sorted(summary.items()) if k.startswith("skipped_")]
    files = summary.get("files", 0)
    return (
        f"exported {output_path} as {summary['format']} to {summary['out']}: {', '.join(wrote)} in {files} "
        f"file{'s' if files != 1 else ''}; left out: {', '.join(left)}"
    )
