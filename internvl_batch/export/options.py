"""What an export writes (`ExportOptions`) and what it counted (`ExportCounts`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from internvl_batch.config import StorageConfig
from internvl_batch.documents import PAGE_SEPARATOR

MAX_ITEMS_PER_FILE = 10_000
SHOWN_FILES = 5
MAX_LABELS = 10_000  # box labels named in a Label Studio config / COCO categories kept on the driver at most


@dataclass(frozen=True)
class ExportOptions:
    """One export of a job's output (`export.run.export_output`; the CLI's `internvl-batch export`)."""

    format: str  # one of `formats.FORMATS`
    out: str  # a file (label-studio, coco, documents: .jsonl or .parquet) or a folder (text); local or a URI
    storage: StorageConfig = field(default_factory=StorageConfig)  # for the output and `out`
    url_prefix: str | None = None  # label-studio: local media paths become url_prefix + path (less strip_prefix)
    strip_prefix: str | None = None  # label-studio: removed from the start of local paths before url_prefix
    max_items_per_file: int = MAX_ITEMS_PER_FILE  # tasks, images or documents per file; more make shards
    label_config: str | None = None  # label-studio: also write the labeling configuration (XML) here
    page_separator: str = PAGE_SEPARATOR  # text, documents: between a document's pages
    task: str | None = "ocr"  # text, documents: the task whose answers are the text (None: every task)
    drop_orphans: bool = False  # leave out results whose input the latest run no longer had
    overwrite: bool = False  # replace an earlier export at `out` (its shards removed first)


@dataclass
class ExportCounts:
    """Counts of one part of an export, added up on the driver (`+`). `counts` keys: rows (current rows read),
    error_rows (left out), skipped_<reason> (rows that are not what the format holds), items, boxes, files,
    pages_failed. `labels` (box labels) and `text_tasks` name what a Label Studio config needs."""

    counts: Counter = field(default_factory=Counter)
    labels: set = field(default_factory=set)
    text_tasks: set = field(default_factory=set)
    files: list = field(default_factory=list)

    def __add__(self, other: ExportCounts) -> ExportCounts:
        labels = self.labels | other.labels
        if len(labels) > MAX_LABELS:  # a label per row (free-text expressions) must not grow the driver
            labels = set(sorted(labels)[:MAX_LABELS])
        return ExportCounts(
            self.counts + other.counts,
            labels,
            self.text_tasks | other.text_tasks,
            (self.files + other.files)[:SHOWN_FILES],
        )
