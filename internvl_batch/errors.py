"""Error types and pipeline stages. Row errors become data (an output row with `error`); the others stop the
job early.

This module owns both halves of a row error as users see it: the stage that failed (`STAGES`) and the error
type (the `RowError` classes below; the class name is what the output says). The `error` column reads
`<stage>: <ErrorType>: <message>` (`format_row_error`), and the output's `error_stage` and `error_type`
columns are its first two parts (`error_parts`), so users filter on columns, not on text. Type and stage
names are part of the output: keep them stable.
"""

from __future__ import annotations

# --- stages -------------------------------------------------------------------------------------------------
MANIFEST = "manifest"  # the manifest row is malformed (read stage)
TASK = "task"  # the row names an unknown task or lacks what its task needs
LIMITS = "limits"  # the row asks for more than a configured limit allows
FETCH = "fetch"  # the media could not be read
DECODE = "decode"  # the media could not be decoded (image, video, PDF)
PROMPT = "prompt"  # the prompt cannot be built (too long for the context)
GENERATE = "generate"  # the model could not answer the row (it does not fit in memory alone, it kills replicas)
STAGES = (MANIFEST, TASK, LIMITS, FETCH, DECODE, PROMPT, GENERATE)


class InternVLBatchError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(InternVLBatchError):
    """The configuration is invalid. Fatal: raised before any expensive work."""


class ConfigChanged(ConfigError):
    """Results of the rows read were made with another config (`output.on_config_change: error`). Exit 2."""


class ModelLoadError(InternVLBatchError):
    """The model cannot be found, read or converted. Fatal."""


class UnsupportedModelError(ModelLoadError):
    """The checkpoint is readable but its architecture is not supported (yet)."""


class JobFailed(InternVLBatchError):
    """The pipeline ran but the job as a whole failed."""


class ColumnContractError(ValueError):
    """A stage was handed a table without a column it needs: a wiring mistake (a bug in the pipeline builder or
    a caller), never bad input."""


class TransientHTTPError(Exception):
    """Worth retrying: a 5xx/429/408 response, a timeout, a reset. `retry_after`: the server's wish, seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- row errors: one input row's problem; the job records it and goes on --------------------------------------


class RowError(InternVLBatchError):
    """Something wrong with one input row; the job records it and goes on."""


class ManifestError(RowError):
    """One manifest row is malformed."""


class TaskError(RowError):
    """The row lacks what its task needs (a question, an expression, a template column), or names no task."""


class LimitError(RowError):
    """The row asks for more than a configured limit allows (images per row, video length, frames, pages)."""


class VideoLimitError(LimitError):
    """The video exceeds a configured limit (duration, frames)."""


class FetchError(RowError):
    """Media could not be read (after retries, where retrying made sense)."""


class AddressRefused(FetchError):
    """The URL leads to an address the job must not connect to."""


class PathRefused(FetchError):
    """The local path is one the job must not read (outside `fetch.local_roots`, under /proc, /sys or /dev, or a
    `file://` URI naming another host)."""


class UnsupportedURIError(RowError):
    """The URI's scheme is not one the job can read."""


class MissingExtraError(UnsupportedURIError):
    """Reading this scheme needs an optional package; the message names the `pip install` to run."""


class ImageDecodeError(RowError):
    """The bytes are not a readable image (empty, not an image, corrupt or truncated)."""


class PixelLimitError(RowError):
    """The image has more pixels than the configured limit (decompression-bomb protection)."""


class VideoDecodeError(RowError):
    """The bytes are not a readable video (empty, corrupt, truncated, no video stream, no frames)."""


class BoundError(RowError):
    """The requested `bound` does not select any part of the video."""


class DecoderCrashed(RowError):
    """The decoder process died on this row twice (a crash in a native decoder: the signal is named)."""


class DecodeTimeout(RowError):
    """Decoding took longer than `preprocess.decode_timeout_s`; the decoder process was stopped."""


class DocumentError(RowError):
    """The bytes are not a readable PDF document (not a PDF, password-protected, corrupt, or without pages)."""


class PromptError(RowError):
    """The prompt cannot be built for this row (for example an `<image>` count that does not match)."""


class OutOfMemoryError(RowError):
    """The row does not fit in the accelerator's memory even alone (the model stage splits batches first)."""


class ReplicaCrashed(RowError):
    """Model replicas' processes died while generating this row, `resources.max_crashes_per_row` times."""


class RowFailure(RowError):
    """A row failed in `stage` because of `cause`; str() is the text of its `error` column."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(format_row_error(stage, cause))
        self.stage = stage
        self.cause = cause

    def __reduce__(self):
        # Pickled (from the decoder process) as its stage and text: the cause may not pickle.
        return (_restore_row_failure, (self.stage, str(self)))


def _restore_row_failure(stage: str, text: str) -> RowFailure:
    failure = RowFailure.__new__(RowFailure)
    RowError.__init__(failure, text)
    failure.stage, failure.cause = stage, None
    return failure


def format_row_error(stage: str, exc: BaseException) -> str:
    """The `error` column text for a row that failed in `stage`: `<stage>: <ErrorType>: <message>`."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if isinstance(exc, RowFailure):
        return str(exc)
    message = str(exc).strip() or "(no message)"
    return f"{stage}: {type(exc).__name__}: {message}"


def error_parts(errors) -> tuple[list, list]:
    """(error_stage, error_type) for a list of `error` texts (None stays None). Exact by construction: every
    text comes from `format_row_error`, whose stage and type hold no ': '."""
    stages, types = [], []
    for text in errors:
        parts = text.split(": ", 2) if text is not None else []
        stages.append(parts[0] if len(parts) == 3 else None)
        types.append(parts[1] if len(parts) == 3 else None)
    return stages, types
