"""Label Studio: one task per image with the job's answers as predictions, and the labeling configuration.

A task (Label Studio's JSON import format): `data` holds the image (`image`: the media URI as stored; s3://,
gs:// and http(s) kept for Label Studio's cloud storage, gcs:// as gs://, az:// as its azure-blob://; local paths as
`url_prefix` + the path less `strip_prefix`, or kept as they are without a prefix) and our `id`;
`predictions` holds one prediction: `model_version` (the model, and each task's config fingerprint when the
rows have one) and one result per task row: text answers as `textarea` results (from_name: the task's name),
`ground` boxes as `rectanglelabels` in percent of the original image (x, y, width, height; rotation 0;
original_width/original_height: the image's size after EXIF orientation), labelled with their expression.
`label_config` writes the matching `<View>`: the image, one RectangleLabels with every label, a TextArea per
text task.
"""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import pyarrow as pa

from internvl_batch.export.images import ImageRows, image_groups
from internvl_batch.export.options import ExportCounts, ExportOptions
from internvl_batch.filesystems import scheme_of

IMAGE = "image"  # the Image tag's name, and the data key of the task's picture
BOXES = "label"  # the RectangleLabels tag's name
KEPT_SCHEMES = ("s3", "gs", "http", "https")
AZURE_SCHEMES = ("az", "abfs", "abfss")


def media_url(uri: str, options: ExportOptions, counts: Counter) -> str:
    """The image's URL in the task's data (see the module's docstring)."""
    scheme = scheme_of(uri)
    if scheme in KEPT_SCHEMES:
        return uri
    if scheme == "gcs":
        return "gs://" + uri.split("://", 1)[1]
    if scheme in AZURE_SCHEMES:
        return "azure-blob://" + uri.split("://", 1)[1]
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    if options.url_prefix is None:
        counts["local_media_unmapped"] += 1
        return path
    if options.strip_prefix and path.startswith(options.strip_prefix):
        path = path[len(options.strip_prefix) :]
    return options.url_prefix + quote(path.lstrip("/"), safe="/")


def model_version(image: ImageRows) -> str:
    """The model's name, then `task:fingerprint` (12 hex) per task row that has one."""
    models = sorted({row["model"] for row in image.rows if row["model"]})
    prints = sorted(f"{r['task']}:{r['config_fingerprint'][:12]}" for r in image.rows if r["config_fingerprint"])
    return " ".join([",".join(models) or "unknown", *prints])


def task_of(image: ImageRows, options: ExportOptions, result: ExportCounts) -> dict:
    """One Label Studio task (see the module's docstring)."""
    regions = []
    for row in image.rows:
        if row["task"] != "ground":
            result.text_tasks.add(row["task"])
            value = {"text": [row["response"] or ""]}
            regions.append({"from_name": row["task"], "to_name": IMAGE, "type": "textarea", "value": value})
            continue
        if not (image.width and image.height):
            result.counts["boxes_without_image_size"] += len(row["boxes"] or [])
            continue
        for box in row["boxes"] or []:
            label = box["label"] or ""
            result.labels.add(label)
            result.counts["boxes"] += 1
            value = {
                "x": 100 * box["x1"] / image.width,
                "y": 100 * box["y1"] / image.height,
                "width": 100 * (box["x2"] - box["x1"]) / image.width,
                "height": 100 * (box["y2"] - box["y1"]) / image.height,
                "rotation": 0,
                "rectanglelabels": [label],
            }
            region = {"from_name": BOXES, "to_name": IMAGE, "type": "rectanglelabels", "value": value}
            region.update(original_width=image.width, original_height=image.height, image_rotation=0)
            regions.append(region)
    for number, region in enumerate(regions):
        region["id"] = f"r{number}"
    data = {IMAGE: media_url(image.media, options, result.counts), "id": image.id}
    return {"data": data, "predictions": [{"model_version": model_version(image), "result": regions}]}


def tasks_of(table: pa.Table, options: ExportOptions) -> tuple[list[dict], ExportCounts]:
    """A partition's current rows -> its Label Studio tasks and counts."""
    result = ExportCounts()
    tasks = [task_of(image, options, result) for image in image_groups(table, result.counts)]
    result.counts["items"] += len(tasks)
    return tasks, result


def encode_tasks(tasks: list[dict]) -> list[tuple[str, bytes]]:
    """A file of tasks: a JSON list (what Label Studio imports)."""
    return [("", json.dumps(tasks, ensure_ascii=False, indent=1).encode("utf-8"))]


def label_config(labels: set[str], text_tasks: set[str]) -> str:
    """The labeling configuration (XML) for tasks with these box labels and text tasks."""
    lines = ["<View>", f'  <Image name="{IMAGE}" value="${IMAGE}"/>']
    if labels:
        lines.append(f'  <RectangleLabels name="{BOXES}" toName="{IMAGE}">')
        lines += [f"    <Label value={quoteattr(label)}/>" for label in sorted(labels)]
        lines.append("  </RectangleLabels>")
    for task in sorted(text_tasks):
        lines.append(f"  <Header value={quoteattr(task)}/>")
        lines.append(f'  <TextArea name={quoteattr(task)} toName="{IMAGE}" editable="true" maxSubmissions="1"/>')
    lines.append("</View>")
    return "\n".join(lines) + "\n"
