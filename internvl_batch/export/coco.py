"""COCO: grounding boxes as detection annotations, captions as caption annotations.

A file of `coco` holds, like COCO's `instances_*.json`, `images` (id: a number within the file; `file_name`:
the media URI as stored; `width`, `height`: the image's size after EXIF orientation; `internvl_id`: our id),
`annotations` (one per box: `bbox` [x, y, width, height] in pixels of that image, `area`, `iscrowd` 0,
`category_id`) and `categories` (one per label, the box's expression, numbered from 1 in name order). The
captions (tasks named `caption*`) go beside it, as COCO's `captions_*.json` does, into `<name>.captions.json`
(`images` again, `annotations` with `caption`): pycocotools indexes the categories of every annotation of a
file, so the two kinds cannot share one. Other text tasks are not COCO's and are counted
(`skipped_text_rows`). pycocotools, FiftyOne and CVAT import these files.
"""

from __future__ import annotations

import json

import pyarrow as pa

from internvl_batch.export.images import ImageRows, image_groups
from internvl_batch.export.options import ExportCounts

CAPTIONS = ".captions"  # the captions file's name: `<stem>.captions<suffix>`


def images_of(table: pa.Table) -> tuple[list[ImageRows], ExportCounts]:
    """A partition's current rows -> its images (those with a size) and counts."""
    result = ExportCounts()
    images = []
    for image in image_groups(table, result.counts):
        if not (image.width and image.height):
            result.counts["skipped_without_size"] += 1
            continue
        images.append(image)
        for row in image.rows:
            if row["task"] == "ground":
                result.counts["boxes"] += len(row["boxes"] or [])
                result.labels.update(box["label"] or "" for box in row["boxes"] or [])
            elif not row["task"].startswith("caption"):
                result.counts["skipped_text_rows"] += 1
    result.counts["items"] += len(images)
    return images, result


def encode_images(images: list[ImageRows]) -> list[tuple[str, bytes]]:
    """One file's images -> (the instances file, the captions file when any image has a caption)."""
    entries, boxes, captions, labels = [], [], [], set()
    for number, image in enumerate(images, start=1):
        entries.append(
            {
                "id": number,
                "file_name": image.media,
                "width": image.width,
                "height": image.height,
                "internvl_id": image.id,
            }
        )
        for row in image.rows:
            if row["task"] == "ground":
                for box in row["boxes"] or []:
                    labels.add(box["label"] or "")
                    boxes.append((number, box))
            elif row["task"].startswith("caption"):
                captions.append({"id": len(captions) + 1, "image_id": number, "caption": row["response"] or ""})
    categories = {label: k for k, label in enumerate(sorted(labels), start=1)}
    annotations = []
    for image_id, box in boxes:
        width, height = box["x2"] - box["x1"], box["y2"] - box["y1"]
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": categories[box["label"] or ""],
                "bbox": [box["x1"], box["y1"], width, height],
                "area": width * height,
                "iscrowd": 0,
            }
        )
    instances = {
        "info": {"description": "InternVL answers exported by internvl-batch"},
        "images": entries,
        "annotations": annotations,
        "categories": [{"id": k, "name": label, "supercategory": ""} for label, k in categories.items()],
    }
    files = [("", _json(instances))]
    if captions:
        files.append((CAPTIONS, _json({"info": instances["info"], "images": entries, "annotations": captions})))
    return files


def _json(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")
