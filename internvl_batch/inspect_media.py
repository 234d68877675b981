"""`internvl-batch inspect`: how each image would be tiled (or which frames of a video sampled, or how each
page of a PDF rendered and tiled), and what it costs in tokens.

Uses the job's own preprocessing (same options, same code), so the numbers are the ones the job will see.
A file is a PDF as the job decides for a one-image row (its bytes start with `%PDF-`, `imaging/document.py`)
or by its `.pdf` name, as a `document` row: one result row per page (`<file>#p<n>`), each page rendered and
tiled as the job does. `--save-tiles DIR` writes the tiles as lossless PNGs in model order (00.png, 01.png,
...; thumbnail last; for a video, one tile per sampled frame; for a PDF, one subfolder per page: p1/, p2/).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from internvl_batch.config import PreprocessConfig
from internvl_batch.errors import DECODE, FETCH, LIMITS, LimitError, RowError, format_row_error
from internvl_batch.imaging import ImagePreprocessor
from internvl_batch.imaging.decode import exif_orientation, open_image
from internvl_batch.imaging.document import PdfRenderer, starts_as_pdf
from internvl_batch.imaging.video import VideoSampler
from internvl_batch.model.checkpoint import read_checkpoint_info
from internvl_batch.model.locate import resolve_model_path

MAX_PAGES = PreprocessConfig.model_fields["max_pages"].default  # the job's default `preprocess.max_pages`
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpeg", ".mpg", ".ts")


@dataclass
class InspectRow:
    source: str
    width: int = 0
    height: int = 0
    grid: str = ""
    thumbnail: bool = False
    tiles: int = 0
    image_tokens: int = 0
    exif_orientation: int = 1
    video_frames: int | None = None
    fps: float | None = None
    frame_indices: list[int] | None = None
    page: int | None = None  # PDF pages: 1-based, of `num_pages`
    num_pages: int | None = None
    error: str | None = None


@dataclass
class VideoOptions:
    num_segments: int = 8
    bound: tuple[float, float] | None = None
    sampler: VideoSampler | None = None


def preprocessor_for(options: PreprocessConfig, model: str | None) -> tuple[ImagePreprocessor, int]:
    """The job's preprocessor for `options`, with the tiling defaults of `model`'s checkpoint (a directory or
    Hub id; None: the reference's), and the image tokens per tile."""
    info = read_checkpoint_info(resolve_model_path(model)) if model else None
    return ImagePreprocessor.from_options(options, info), (info.tokens_per_tile if info else 256)


def is_pdf_file(path: Path, data: bytes) -> bool:
    """A PDF as the job reads one: bytes that start as a PDF (an image row's rule), or a `.pdf` file (a
    `document` row's: its bytes are then checked as a PDF, and refused with the job's error if they are not)."""
    return starts_as_pdf(data) or path.suffix.lower() == ".pdf"


def inspect_media(
    path: Path,
    pre: ImagePreprocessor,
    video: VideoOptions,
    tokens_per_tile: int = 256,
    save_dir: Path | None = None,
    max_pages: int = MAX_PAGES,
) -> list[InspectRow]:
    """One row for an image or a video, one per page for a PDF (or one with the error that stopped it)."""
    row = InspectRow(str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        row.error = format_row_error(FETCH, exc)
        return [row]
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return [_inspect_video(row, data, video, tokens_per_tile, save_dir)]
    if is_pdf_file(path, data):
        return _inspect_pdf(row, data, pre, max_pages, tokens_per_tile, save_dir)
    try:
        row.exif_orientation = exif_orientation(open_image(data, pre.max_pixels))
        out = pre(data)
    except RowError as exc:
        row.error = format_row_error(DECODE, exc)
        return [row]
    _tiled(row, out, tokens_per_tile, save_dir)
    return [row]


def _tiled(row: InspectRow, out, tokens_per_tile: int, save_dir: Path | None) -> InspectRow:
    plan = out.plan
    row.width, row.height = plan.width, plan.height
    row.grid, row.thumbnail = f"{plan.cols}x{plan.rows}", plan.thumbnail
    row.tiles, row.image_tokens = out.num_tiles, out.num_tiles * tokens_per_tile
    if save_dir is not None:
        save_tiles(out.tiles, save_dir)
    return row


def _inspect_pdf(
    row: InspectRow, data: bytes, pre: ImagePreprocessor, max_pages: int, tokens_per_tile: int, save_dir
) -> list[InspectRow]:
    """Each page rendered and tiled as the job does (`stages/media.py`); a document that cannot be opened is
    one row with the job's error for it."""
    renderer = PdfRenderer(pre.min_num, pre.max_num, max_pages)
    try:
        document = renderer.open(data)
    except LimitError as exc:
        row.error = format_row_error(LIMITS, exc)
        return [row]
    except Exception as exc:  # noqa: BLE001 - as the job: any failure to open is the document's (decode)
        row.error = format_row_error(DECODE, exc)
        return [row]
    count, rows = len(document), []
    for page in renderer.pages(document):
        page_row = InspectRow(f"{row.source}#p{page.number}", page=page.number, num_pages=count)
        rows.append(page_row)
        try:
            if page.error is not None:
                raise page.error
            out = pre.process_image(page.image)
        except Exception as exc:  # noqa: BLE001 - the job makes any page failure that page's decode error
            page_row.error = format_row_error(DECODE, exc)
            continue
        _tiled(page_row, out, tokens_per_tile, None if save_dir is None else save_dir / f"p{page.number}")
    return rows


def _inspect_video(
    row: InspectRow, data: bytes, options: VideoOptions, tokens_per_tile: int, save_dir: Path | None
) -> InspectRow:
    try:
        sampled = (options.sampler or VideoSampler())(data, options.num_segments, options.bound)
    except RowError as exc:
        row.error = format_row_error(DECODE, exc)
        return row
    row.width, row.height = sampled.frame_size  # as decoded
    row.grid, row.tiles = "1x1/frame", sampled.num_frames
    row.image_tokens = sampled.num_frames * tokens_per_tile
    row.video_frames, row.fps, row.frame_indices = sampled.total_frames, sampled.fps, sampled.frame_indices
    if save_dir is not None:
        save_tiles(sampled.tiles, save_dir)
    return row


def save_tiles(tiles, directory: Path) -> list[Path]:
    """Each tile as `NN.png` (zero-padded, model order) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(len(tiles) - 1)))
    paths = []
    for index, tile in enumerate(tiles):
        path = directory / f"{index:0{width}d}.png"
        Image.fromarray(tile).save(path, "PNG")
        paths.append(path)
    return paths


def tile_dirs(paths: list[Path], save_root: Path | None) -> list[Path | None]:
    """Where each image's tiles go: the root itself for one image, else one subfolder per image."""
    if save_root is None:
        return [None] * len(paths)
    if len(paths) == 1:
        return [save_root]
    seen: dict[str, int] = {}
    dirs = []
    for path in paths:
        stem = path.stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        dirs.append(save_root / (stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
    return dirs


def run_inspect(
    paths: list[Path],
    pre: ImagePreprocessor,
    video: VideoOptions,
    tokens_per_tile: int,
    save_root: Path | None,
    as_json: bool,
) -> int:
    rows = [
        row
        for p, d in zip(paths, tile_dirs(paths, save_root))
        for row in inspect_media(p, pre, video, tokens_per_tile, d)
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row.__dict__))
    else:
        print(render_table(rows, pre))
    if save_root is not None:
        print(f"tiles written under {save_root}", file=sys.stderr)
    return 1 if any(r.error for r in rows) else 0


def render_table(rows: list[InspectRow], pre: ImagePreprocessor) -> str:
    header = ("image", "size", "grid", "thumb", "tiles", "tokens")
    lines = [header]
    for r in rows:
        if r.error:
            lines.append((r.source, "-", "-", "-", "-", r.error))
            continue
        size = f"{r.width}x{r.height}" + (f" (EXIF {r.exif_orientation})" if r.exif_orientation != 1 else "")
        if r.video_frames is not None:
            size += f", {r.video_frames} frames at {r.fps:g} fps, sampled {r.frame_indices}"
        lines.append((r.source, size, r.grid, "yes" if r.thumbnail else "no", str(r.tiles), str(r.image_tokens)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1] for line in lines]
    ok = [r for r in rows if not r.error]
    pages = sum(1 for r in ok if r.page is not None)
    counted = f"{len(ok) - pages} file(s)" + (f" and {pages} PDF page(s)" if pages else "")
    text.append(
        f"{counted}, {sum(r.tiles for r in ok)} tiles, {sum(r.image_tokens for r in ok)} image tokens "
        f"(max_num={pre.max_num}, min_num={pre.min_num}, thumbnail={'on' if pre.use_thumbnail else 'off'}, "
        f"exif_transpose={'on' if pre.exif_transpose else 'off'}, mode={pre.mode})"
    )
    return "\n".join(text)
