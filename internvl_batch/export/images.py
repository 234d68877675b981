"""The rows of one image, as Label Studio tasks and COCO images are made from: current rows grouped by id.

An image here is a row of one image (not a video, not several images, not a PDF page: those are counted as
skipped, `skipped_not_image`); error rows are left out and counted (`error_rows`); an id's ok rows of every
task make one `ImageRows`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa


@dataclass
class ImageRows:
    id: str
    media: str  # the media URI as stored in the rows
    width: int | None
    height: int | None
    rows: list[dict]  # the ok rows of every task, by task name


def image_groups(table: pa.Table, counts: Counter) -> list[ImageRows]:
    """Current rows sorted by id (`rows.partition_rows`) -> one ImageRows per id that has ok single-image rows."""
    images: list[ImageRows] = []
    for row in table.to_pylist():
        counts["rows"] += 1
        if row["status"] != "ok":
            counts["error_rows"] += 1
            continue
        media = row["media"] or []
        if row["page"] is not None or row["num_frames"] is not None or len(media) != 1:
            counts["skipped_not_image"] += 1
            continue
        size = (row["media_sizes"] or [None])[0] or {}
        if not images or images[-1].id != row["id"]:
            images.append(ImageRows(row["id"] or "", media[0], size.get("width"), size.get("height"), []))
        images[-1].rows.append(row)
    return images
