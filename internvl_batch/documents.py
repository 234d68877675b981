"""Documents: a job's current rows as one row per document and task, the text of its pages in order.

A PDF's pages are rows of their own (`<id>#p<n>`, `page`, `num_pages`); its document is those rows joined:
`text` holds every page's answer in page order, joined by a separator (default a form feed, as `pdftotext`
separates pages), a failed page marked in place with its error (`[page 2 failed: <error>]`) and a page no run
wrote as `[page 3 missing]`. A one-image row is a one-page document (a scanned page). Not documents, and
counted as such: rows of several images and video rows (`skipped_not_document`). Error rows without pages (a
PDF that could not be read at all, an image that failed) have no text to give: they are left out and counted
(`error_rows`). `read_results(..., documents=True)` returns `documents_table`'s table; `export --format
documents|text` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from internvl_batch.keys import document_ids

# The result columns a document is made from (besides id, task, page).
DOCUMENT_COLUMNS = ("status", "response", "error", "num_pages", "media", "num_frames")
PAGE_SEPARATOR = "\f"
DOCUMENTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("text", pa.string()),
        ("num_pages", pa.int32()),
        ("pages_ok", pa.int32()),
        ("pages_failed", pa.int32()),
    ]
)


@dataclass
class DocumentCounts:
    """What grouping rows into documents wrote and left out."""

    documents: int = 0
    pages_failed: int = 0
    error_rows: int = 0
    skipped_not_document: int = 0
    skipped_other_task: int = 0

    def __add__(self, other: DocumentCounts) -> DocumentCounts:
        return DocumentCounts(
            self.documents + other.documents,
            self.pages_failed + other.pages_failed,
            self.error_rows + other.error_rows,
            self.skipped_not_document + other.skipped_not_document,
            self.skipped_other_task + other.skipped_other_task,
        )


def _column(table: pa.Table, name: str) -> list:
    if name in table.column_names:
        return table.column(name).to_pylist()
    return [None] * table.num_rows


def group_documents(
    table: pa.Table, separator: str = PAGE_SEPARATOR, task: str | None = None
) -> tuple[pa.Table, DocumentCounts]:
    """Current result rows (every row of each document among them, as `results.current_rows` leaves them) ->
    (one row per document and task, sorted by id and task; counts). `task`: only that task's rows (the others
    counted as `skipped_other_task`)."""
    counts = DocumentCounts()
    if task is not None and table.num_rows:
        wanted = pc.equal(table.column("task"), task).fill_null(False)
        counts.skipped_other_task = table.num_rows - pc.sum(wanted).as_py()
        table = table.filter(wanted)
    ids, tasks = _column(table, "id"), _column(table, "task")
    pages, totals = _column(table, "page"), _column(table, "num_pages")
    statuses, answers = _column(table, "status"), _column(table, "response")
    errors, media, frames = _column(table, "error"), _column(table, "media"), _column(table, "num_frames")
    documents: dict[tuple[str, str], dict] = {}
    for k in range(len(ids)):
        if pages[k] is not None:
            key = (document_ids([ids[k]], [pages[k]])[0] or "", tasks[k] or "")
            document = documents.setdefault(key, {"num_pages": 0, "pages": {}})
            # The page count of the document's first page row (its latest read: pages beyond it are of an
            # earlier, longer version); the highest page for rows that do not say.
            document["num_pages"] = document["num_pages"] or totals[k] or 0
            document["pages"][pages[k]] = (statuses[k] == "ok", answers[k] if statuses[k] == "ok" else errors[k])
        elif frames[k] is not None or len(media[k] or []) != 1:
            counts.skipped_not_document += 1
        elif statuses[k] != "ok":
            counts.error_rows += 1
        else:
            documents[(ids[k] or "", tasks[k] or "")] = {"num_pages": 1, "pages": {1: (True, answers[k])}}
    rows = {name: [] for name in DOCUMENTS_SCHEMA.names}
    for (doc_id, doc_task), document in sorted(documents.items()):
        document["num_pages"] = document["num_pages"] or max(document["pages"])
        texts, ok = [], 0
        for number in range(1, document["num_pages"] + 1):
            page = document["pages"].get(number)
            if page is None:
                texts.append(f"[page {number} missing]")
            elif page[0]:
                texts.append(page[1] or "")
                ok += 1
            else:
                texts.append(f"[page {number} failed: {page[1]}]")
        for name, value in zip(
            DOCUMENTS_SCHEMA.names,
            (doc_id, doc_task, separator.join(texts), document["num_pages"], ok, document["num_pages"] - ok),
        ):
            rows[name].append(value)
    counts.documents = len(rows["id"])
    counts.pages_failed = sum(rows["pages_failed"])
    return pa.table(rows, schema=DOCUMENTS_SCHEMA), counts


def documents_table(table: pa.Table) -> pa.Table:
    """`read_results(..., documents=True)`: `group_documents` of the current rows, every task, default separator."""
    return group_documents(table)[0]
