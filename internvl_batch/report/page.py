"""The report as one self-contained HTML page: inline CSS, pictures as data: URIs, plots as inline SVG, no
script. Every text from the model or a manifest goes through `html.escape` (`_e`): a caption holding
`<script>` is shown, never run. Texts that may hold credentials (media URIs, error messages, paths, run
summaries) also go through `redact.redact_text` (`_r`): outputs written before the job redacted them may
still hold presigned URLs.

Sections: a summary of the runs, the result files that could not be read (which, why), plots, the gallery (per
task: thumbnail, answer; grounding boxes as an SVG drawn over the picture in the original image's pixel
coordinates, so they sit where the model put them at any display size; a video's frames as a strip; a `json`
row's parsed object), and failures by stage and type.
"""

from __future__ import annotations

import json
from html import escape

from internvl_batch.redact import redact_text
from internvl_batch.report.collect import ReportData
from internvl_batch.report.media import MediaThumbnails, Thumbnail
from internvl_batch.report.plots import bars_svg, histogram_svg

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1400px}
h1{font-size:1.5rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}
table.summary td{padding:.15rem .8rem .15rem 0;vertical-align:top}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots svg{width:420px;height:auto}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:1rem}
figure.row{margin:0;border:1px solid #ddd;border-radius:6px;padding:.6rem;background:#fafafa}
.pic{position:relative;display:inline-block;line-height:0}.pic img{display:block;max-width:100%}
.pic svg.boxes{position:absolute;left:0;top:0;width:100%;height:100%}
.strip{display:flex;gap:2px;flex-wrap:wrap}.strip img{height:68px}
.placeholder{background:#eee;color:#777;padding:2rem .8rem;font-size:.85rem;line-height:1.3}
.answer{white-space:pre-wrap;margin:.4rem 0 0;font-size:.9rem}.meta{color:#666;font-size:.8rem}
.warn{color:#a33}pre{white-space:pre-wrap;font-size:.8rem;background:#f0f0f0;padding:.4rem}
.errors td{padding:.2rem .6rem;vertical-align:top;font-size:.85rem}
"""


def _e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _r(value) -> str:
    """`value` redacted (secret URI query values and userinfo replaced by REDACTED), then escaped."""
    return _e(redact_text("" if value is None else str(value)))


def render(data: ReportData, thumbnails: MediaThumbnails) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>internvl-batch report: {_r(data.output_path)}</title><style>{STYLE}</style></head><body>",
        f"<h1>internvl-batch report</h1><p class='meta'>{_r(data.output_path)}</p>",
        _summary(data),
        _skipped(data),
        _plots(data),
        _gallery(data, thumbnails),
        _failures(data),
        "</body></html>",
    ]
    return "\n".join(parts)


def _summary(data: ReportData) -> str:
    s = data.summary or {}
    rows = [
        ("rows read for this report", f"{data.rows} ({data.ok} ok, {data.rows - data.ok} failed)"),
        (
            "result files",
            f"{data.files_read} of {data.files_total} read"
            + (f", {data.files_cut} of them only in part" if data.files_cut else "")
            + (" (a sample)" if data.sampled else "")
            + (f"; {len(data.skipped)} could not be read in full (see below)" if data.skipped else ""),
        ),
    ]
    if s:
        resumed = s.get("rows_already_done", 0)
        rows += [
            ("model", s.get("model")),
            ("latest run", f"{s.get('run_id')} ({s.get('status')}), {s.get('started_at')} to {s.get('finished_at')}"),
            (
                "latest run's rows",
                f"{s.get('rows_ok')} ok, {s.get('rows_failed')} failed"
                + (f"; resumed: {resumed} results were already done" if resumed else ""),
            ),
            ("errors by stage", ", ".join(f"{k}: {v}" for k, v in (s.get("errors_by_stage") or {}).items()) or "none"),
            ("images, tiles", f"{s.get('images')} images, {s.get('tiles')} tiles"),
            ("output tokens", f"{s.get('output_tokens')} ({s.get('output_tokens_per_s')}/s)"),
            ("throughput, wall time", f"{s.get('rows_per_s')} rows/s, {s.get('wall_time_s')} s"),
        ]
        if s.get("replica_crashes"):
            rows.append(("model replica crashes", f"{s['replica_crashes']} ({s.get('rows_crashed', 0)} rows given up)"))
    if data.runs:
        runs = "; ".join(f"{r.get('run_id')} ({r.get('status')}, {r.get('rows_processed')} rows)" for r in data.runs)
        rows.append((f"runs ({len(data.runs)})", runs))
    if data.parse_errors:
        rows.append(("answers with a parse_error", data.parse_errors))
    cells = "".join(f"<tr><td><b>{_e(k)}</b></td><td>{_r(v)}</td></tr>" for k, v in rows)
    return f"<section id='summary'><h2>Summary</h2><table class='summary'>{cells}</table></section>"


def _skipped(data: ReportData) -> str:
    """The result files the report skipped (or whose gallery rows it could not read), and why."""
    if not data.skipped:
        return ""
    items = "".join(
        f"<li class='skipped-file' data-file='{_r(file)}'><code>{_r(file)}</code>: {_r(why)}</li>"
        for file, why in data.skipped
    )
    return (
        "<section id='skipped'><h2>Result files not read</h2><p class='warn'>These result files are left out of "
        f"this report, whole or in part; the rest of the output is reported.</p><ul>{items}</ul></section>"
    )


def _plots(data: ReportData) -> str:
    plots = [
        histogram_svg(data.tiles, "Tiles per row", "tiles"),
        histogram_svg(data.input_tokens, "Input tokens per row", "tokens"),
        histogram_svg(data.output_tokens, "Output tokens per row", "tokens"),
        bars_svg(data.finish_reasons, "Finish reasons (length: max_new_tokens reached)"),
    ]
    body = "".join(f"<div class='plot'>{svg}</div>" for svg in plots if svg) or "<p>No ok rows to plot.</p>"
    return f"<section id='plots'><h2>Plots</h2><div class='plots'>{body}</div></section>"


def _gallery(data: ReportData, thumbnails: MediaThumbnails) -> str:
    parts = ["<section id='gallery'><h2>Gallery</h2>"]
    if not data.gallery:
        parts.append("<p>No ok rows.</p>")
    for task, rows in sorted(data.gallery.items()):
        parts.append(f"<h3>{_e(task)} ({len(rows)} of {data.ok_by_task[task]} ok rows)</h3><div class='gallery'>")
        parts += [_row(row, thumbnails.for_row(row)) for row in rows]
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _row(row: dict, thumb: Thumbnail) -> str:
    parts = [f"<figure class='row' data-id='{_e(row['id'])}' data-task='{_e(row['task'])}'>"]
    if thumb.error:
        parts.append(f"<div class='placeholder'>{_r(thumb.error)}</div>")
    elif len(thumb.images) > 1 or row.get("frame_indices"):
        times = row.get("frame_timestamps") or []
        parts.append("<div class='strip'>")
        for k, uri in enumerate(thumb.images):
            label = f"{times[k]:.2f} s" if k < len(times) else ""
            parts.append(f"<img src='{uri}' alt='frame {k + 1}' title='{_e(label)}'>")
        parts.append("</div>")
    else:
        parts.append(
            f"<div class='pic'><img src='{thumb.images[0]}' width='{thumb.width}' height='{thumb.height}' alt=''>"
        )
        parts.append(_boxes(row))
        parts.append("</div>")
    meta = [_e(row["id"]), _r((row.get("media") or [""])[0])]
    if row.get("page"):
        meta.append(_e(f"page {row['page']} of {row.get('num_pages')}"))
    parts.append(f"<figcaption><div class='meta'>{' · '.join(m for m in meta if m)}</div>")
    if row.get("question"):
        parts.append(f"<div class='meta'>Q: {_e(row['question'])}</div>")
    parts.append(f"<div class='answer'>{_e(row.get('response'))}</div>")
    if row.get("parsed") is not None:
        parts.append(
            f"<pre class='parsed'>{_e(json.dumps(row['parsed'], indent=2, ensure_ascii=False, default=str))}</pre>"
        )
    if row.get("boxes"):
        labels = ", ".join(
            f"{b['label']} [{b['x1']:.0f}, {b['y1']:.0f}, {b['x2']:.0f}, {b['y2']:.0f}]" for b in row["boxes"]
        )
        parts.append(f"<div class='meta'>boxes: {_e(labels)}</div>")
    if row.get("parse_error"):
        parts.append(f"<div class='warn'>parse_error: {_e(row['parse_error'])}</div>")
    parts.append(
        f"<div class='meta'>{_e(row.get('num_input_tokens'))} input tokens, {_e(row.get('num_output_tokens'))} "
        f"output tokens, finish: {_e(row.get('finish_reason'))}</div></figcaption></figure>"
    )
    return "".join(parts)


def _boxes(row: dict) -> str:
    """The row's boxes over its picture: an SVG whose coordinates are the original image's pixels."""
    sizes, boxes = row.get("media_sizes") or [], row.get("boxes") or []
    if not boxes or not sizes:
        return ""
    width, height = sizes[0]["width"], sizes[0]["height"]
    shapes = []
    for box in boxes:
        x, y = box["x1"], box["y1"]
        w, h = box["x2"] - box["x1"], box["y2"] - box["y1"]
        shapes.append(
            f"<rect class='box' x='{x:g}' y='{y:g}' width='{w:g}' height='{h:g}' fill='none' stroke='#e3342f' "
            f"stroke-width='{max(width, height) / 150:g}' data-label='{_e(box['label'])}'></rect>"
            f"<text x='{x:g}' y='{max(y - 4, 12):g}' fill='#e3342f' font-size='{max(width, height) / 25:g}'>"
            f"{_e(box['label'])}</text>"
        )
    return (
        f"<svg class='boxes' viewBox='0 0 {width} {height}' preserveAspectRatio='none' "
        f"xmlns='http://www.w3.org/2000/svg'>{''.join(shapes)}</svg>"
    )


def _failures(data: ReportData) -> str:
    parts = ["<section id='failures'><h2>Failures</h2>"]
    if not data.error_groups:
        parts.append("<p>No failed rows.</p>")
    for (stage, kind), group in sorted(data.error_groups.items(), key=lambda kv: -kv[1]["count"]):
        parts.append(
            f"<div class='error-group' data-stage='{_e(stage)}' data-type='{_e(kind)}'>"
            f"<h3>{_e(stage)}: {_e(kind)} ({group['count']} rows)</h3><table class='errors'>"
        )
        for example in group["examples"]:
            media = ", ".join(example["media"])
            parts.append(f"<tr><td>{_e(example['id'])}</td><td>{_r(media)}</td><td>{_r(example['error'])}</td></tr>")
        parts.append("</table></div>")
    parts.append("</section>")
    return "".join(parts)
