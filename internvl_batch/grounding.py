"""Grounding answers -> boxes in pixels of the original image.

The model answers `<ref>label</ref><box>[[x1, y1, x2, y2], [x1, y1, x2, y2]]</box>`, possibly several
`<ref>`/`<box>` pairs, with integers on a 0..1000 scale of the original image's width and height (independent
of tiling). Pixels: `x * width / 1000`, `y * height / 1000`, with the image's true size after EXIF orientation.
Malformed box text never fails the row: what parses is kept, the rest is reported as a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REF_OR_BOX = re.compile(r"<ref>(.*?)</ref>|<box>(.*?)</box>", re.DOTALL)
_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")
_QUAD = re.compile(
    r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]"
)


@dataclass
class ParsedBoxes:
    boxes: list[dict]
    warnings: list[str]


def parse_boxes(text: str, width: int, height: int, default_label: str | None = None) -> ParsedBoxes:
    """Every box in `text`, in pixel coordinates of a `width` x `height` image."""
    boxes: list[dict] = []
    warnings: list[str] = []
    label = default_label
    found_box_tag = False
    for match in _REF_OR_BOX.finditer(text or ""):
        if match.group(1) is not None:
            label = match.group(1).strip()
            continue
        found_box_tag = True
        body = match.group(2)
        quads = _QUAD.findall(body)
        leftover = _QUAD.sub("", body)
        if not quads or _NUMBERS.search(leftover):
            warnings.append(f"unparsed box text {body.strip()[:80]!r}")
        for quad in quads:
            x1, y1, x2, y2 = (float(v) for v in quad)
            if not all(0 <= v <= 1000 for v in (x1, y1, x2, y2)):
                warnings.append(f"box {[x1, y1, x2, y2]} outside 0..1000, clamped")
                x1, y1, x2, y2 = (min(max(v, 0.0), 1000.0) for v in (x1, y1, x2, y2))
            if x2 < x1 or y2 < y1:
                warnings.append(f"box {[x1, y1, x2, y2]} has its corners swapped, reordered")
                x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
            boxes.append(
                {
                    "label": label,
                    "x1": x1 * width / 1000,
                    "y1": y1 * height / 1000,
                    "x2": x2 * width / 1000,
                    "y2": y2 * height / 1000,
                }
            )
    if not found_box_tag:
        warnings.append("no <box> in the answer")
    return ParsedBoxes(boxes, warnings)
