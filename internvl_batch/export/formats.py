"""The export formats: how a partition's current rows become items, and items files (`FORMATS`, one entry each).

| format | items | files |
|---|---|---|
| label-studio | one task per image (`label_studio.py`) | JSON lists of tasks (shards), the labeling config (`--label-config`) |
| coco | one image per image id (`coco.py`) | instances JSON (+ `.captions.json`), shards |
| documents | one row per document and task (`documents.py`) | JSONL (`.jsonl`) or Parquet (`.parquet`), shards |
| text | one document per file (`documents.py`) | `<out>/<id>.txt`, UTF-8 |
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from internvl_batch.documents import DOCUMENTS_SCHEMA, group_documents
from internvl_batch.errors import ConfigError
from internvl_batch.export.coco import CAPTIONS, encode_images, images_of
from internvl_batch.export.label_studio import encode_tasks, tasks_of
from internvl_batch.export.options import ExportCounts, ExportOptions
from internvl_batch.export.writers import split_name


@dataclass(frozen=True)
class Format:
    name: str
    items: Callable[[pa.Table, ExportOptions], tuple[list, ExportCounts]]
    encoder: Callable[[ExportOptions], Callable[[list], list[tuple[str, bytes]]]] | None  # None: a file per item
    variants: tuple[str, ...] = ("",)  # the file name variants one shard writes (COCO's captions)
    by_task: bool = False  # read only `options.task`'s rows

    def check(self, options: ExportOptions) -> None:
        """Refuse (ConfigError) options this format cannot write."""
        if self.name == "documents" and split_name(options.out)[1].lower() not in (".jsonl", ".parquet"):
            raise ConfigError(f"--format documents writes .jsonl or .parquet files: {options.out!r} is neither")
        if options.max_items_per_file < 1:
            raise ConfigError("--max-tasks-per-file must be at least 1")


def document_items(table: pa.Table, options: ExportOptions) -> tuple[list[dict], ExportCounts]:
    documents, counts = group_documents(table, options.page_separator, options.task)
    result = ExportCounts()
    result.counts.update(
        rows=table.num_rows,
        items=counts.documents,
        pages_failed=counts.pages_failed,
        error_rows=counts.error_rows,
        skipped_not_document=counts.skipped_not_document,
    )
    return documents.to_pylist(), result


def encode_documents(options: ExportOptions) -> Callable[[list], list[tuple[str, bytes]]]:
    if split_name(options.out)[1].lower() == ".parquet":

        def parquet(items: list[dict]) -> list[tuple[str, bytes]]:
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(items, schema=DOCUMENTS_SCHEMA), buf, compression="zstd")
            return [("", buf.getvalue())]

        return parquet
    return lambda items: [("", "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items).encode("utf-8"))]


FORMATS = {
    f.name: f
    for f in (
        Format("label-studio", tasks_of, lambda options: encode_tasks),
        Format("coco", lambda table, options: images_of(table), lambda options: encode_images, ("", CAPTIONS)),
        Format("documents", document_items, encode_documents, by_task=True),
        Format("text", document_items, None, by_task=True),
    )
}


def format_named(name: str) -> Format:
    if name not in FORMATS:
        raise ConfigError(f"unknown export format {name!r}: choose one of {', '.join(FORMATS)}")
    return FORMATS[name]
