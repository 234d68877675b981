"""The report's plots, as inline SVG drawn by matplotlib (no network, no script in the page)."""

from __future__ import annotations

import io
from collections import Counter


def histogram_svg(values: list[int], title: str, xlabel: str) -> str:
    """A histogram of `values` ("" when there are none)."""
    if not values:
        return ""
    figure, axes = _figure()
    bins = min(30, max(1, len(set(values))))
    axes.hist(values, bins=bins, color="#4c72b0", edgecolor="white")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("rows")
    return _svg(figure)


def bars_svg(counts: Counter, title: str) -> str:
    """Bars of `counts` ("" when empty), largest first."""
    if not counts:
        return ""
    figure, axes = _figure()
    labels, heights = zip(*counts.most_common())
    colors = ["#c44e52" if label == "length" else "#4c72b0" for label in labels]
    axes.bar([str(label) for label in labels], heights, color=colors)
    axes.set_title(title)
    axes.set_ylabel("rows")
    return _svg(figure)


def _figure():
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot, no display backend
    except ImportError:
        raise RuntimeError("the report's plots need matplotlib: pip install matplotlib") from None

    figure = Figure(figsize=(4.2, 2.8), dpi=100, layout="tight")
    return figure, figure.add_subplot()


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # inline: no XML declaration or doctype
    start, end = text.find("<metadata>"), text.find("</metadata>")
    return text[:start] + text[end + len("</metadata>") :] if start >= 0 <= end else text
