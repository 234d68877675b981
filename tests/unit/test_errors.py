"""Row errors as users filter them: one module owns the stage names and error types; the output's
`error_stage` and `error_type` columns are the first two parts of `error`."""

import pyarrow as pa
import pytest

from internvl_batch import errors
from internvl_batch.errors import STAGES, FetchError, RowError, RowFailure, error_parts, format_row_error
from internvl_batch.stages.output import to_output_table


def test_error_text_and_its_parts():
    text = format_row_error("fetch", FetchError("s3://b/a.jpg: not found"))
    assert text == "fetch: FetchError: s3://b/a.jpg: not found"
    assert error_parts([text, None, "decode: ImageDecodeError: bad: really"]) == (
        ["fetch", None, "decode"],
        ["FetchError", None, "ImageDecodeError"],
    )


def test_unknown_stage_is_a_bug():
    with pytest.raises(ValueError, match="unknown stage 'fetching'"):
        format_row_error("fetching", FetchError("x"))


def test_row_failure_is_a_row_error_and_keeps_its_stage_and_cause():
    cause = FetchError("gone")
    failure = RowFailure("fetch", cause)
    assert isinstance(failure, RowError) and (failure.stage, failure.cause) == ("fetch", cause)
    assert str(failure) == format_row_error("decode", failure) == "fetch: FetchError: gone"


def test_every_row_error_type_lives_in_errors():
    row_errors = {
        name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, RowError)
    }
    assert {
        "ManifestError",
        "TaskError",
        "LimitError",
        "FetchError",
        "AddressRefused",
        "ImageDecodeError",
        "PixelLimitError",
        "VideoDecodeError",
        "BoundError",
        "DocumentError",
        "PromptError",
        "OutOfMemoryError",
    } <= row_errors
    assert STAGES == ("manifest", "task", "limits", "fetch", "decode", "prompt", "generate")


def test_output_has_error_stage_and_type_columns():
    table = pa.table(
        {
            "id": ["a", "b"],
            "task": ["caption"] * 2,
            "error": [None, "prompt: PromptError: prompt of 3415 tokens exceeds ..."],
        }
    )
    out = to_output_table(table, "tiny", [], "run").select(["status", "error_stage", "error_type"]).to_pylist()
    assert out == [
        {"status": "ok", "error_stage": None, "error_type": None},
        {"status": "error", "error_stage": "prompt", "error_type": "PromptError"},
    ]
