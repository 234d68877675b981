"""Error types. Row errors become data (an output row with `error`); the others stop the job early.

A row error's text in the output reads `<stage>: <ExceptionType>: <message>`, so the type names here are part
of the output users filter on: keep them stable.
"""

from __future__ import annotations


class InternVLBatchError(Exception):
    """Base class of every error this package raises on purpose."""


class RowError(InternVLBatchError):
    """Something wrong with one input row; the job records it and goes on."""


class ImageDecodeError(RowError):
    """The bytes are not a readable image (empty, not an image, corrupt or truncated)."""


class DocumentError(RowError):
    """The bytes are not a readable PDF document (not a PDF, password-protected, corrupt, or without pages)."""


class PixelLimitError(RowError):
    """The image has more pixels than the configured limit (decompression-bomb protection)."""


class LimitError(RowError):
    """The row asks for more than a configured limit allows (images per row, video length, frames, pages)."""


class PromptError(RowError):
    """The prompt cannot be built for this row (for example an `<image>` count that does not match)."""


class ConfigError(InternVLBatchError):
    """The configuration is invalid. Fatal: raised before any expensive work."""


class ModelLoadError(InternVLBatchError):
    """The model cannot be found, read or converted. Fatal."""


class UnsupportedModelError(ModelLoadError):
    """The checkpoint is readable but its architecture is not supported (yet)."""


def format_row_error(stage: str, exc: BaseException) -> str:
    """The `error` column text for a row that failed in `stage`."""
    message = str(exc).strip() or "(no message)"
    return f"{stage}: {type(exc).__name__}: {message}"
