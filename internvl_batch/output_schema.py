"""The output's columns, and the names a user's column may take in it.

The output schema: one Parquet row per input row and task (per page of a PDF), typed, in a stable column order.

| column | type | meaning |
|---|---|---|
| id | string | the manifest row's id (`<file>:<line>` when the row had none); a PDF page's row: `<id>#p<n>` |
| status | string | `ok` or `error` |
| task | string | task of the row |
| question | string | the question asked (the default prompt when the row had none) |
| response | string | the model's answer; null on error |
| media | list<string> | media URIs, resolved (secret query values and `user:password@` shown as `REDACTED`) |
| num_tiles | list<int32> | tiles per image (thumbnail included) |
| num_input_tokens | int32 | prompt tokens (image tokens included) |
| num_output_tokens | int32 | generated tokens, the stop token included |
| finish_reason | string | `stop` (ended with <|im_end|>) or `length` (hit max_new_tokens) |
| media_sizes | list<struct<width, height>> | each image's size after EXIF orientation (video: the frame size) |
| boxes | list<struct<label, x1, y1, x2, y2>> | `ground` rows: boxes in pixels of the original image |
| parse_error | string | `ground`/`json` rows whose answer could not be fully parsed (the raw text stays in `response`) |
| num_frames | int32 | video rows: frames sampled; null otherwise |
| frame_indices | list<int32> | video rows: the sampled frame indices (decord's numbering) |
| frame_timestamps | list<float64> | video rows: the sampled frames' times in seconds (index / average fps) |
| page | int32 | document rows: the page (1-based); null otherwise and for a document that could not be read |
| num_pages | int32 | document rows: the document's number of pages |
| error | string | null on success, else `<stage>: <ErrorType>: <message>` |
| error_stage | string | the stage that failed (`errors.STAGES`: manifest, task, limits, fetch, decode, prompt, generate) |
| error_type | string | the error's type (`errors.py`: ManifestError, FetchError, ImageDecodeError, ...) |
| model | string | the model that answered |
| run_id | string | the run that wrote the row (sortable by time; the latest run's row is the current one) |
| source_version | string | the version of the media the row was made from (a media root's object: ETag, GCS generation, local size and mtime; a manifest's `version` column); null when unknown |
| config_fingerprint | string | a hash of what decides the answer for this row's task: model files, prompt and system message, generation and pixel settings (`fingerprint.py`; the parts in the run record) |
| parsed | typed from task.json_schema | `json` rows: the validated answer (only when the job has a json schema) |

Pass-through columns of `input.passthrough_columns` follow, unchanged, under their output names (a name the
output already has is refused when the config is read: `clash_problem`). Rows are made by `stages/output.py`.
This module imports no other of the package: the config checks pass-through names with it.
"""

from __future__ import annotations

import pyarrow as pa

OUTPUT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("status", pa.string()),
        ("task", pa.string()),
        ("question", pa.string()),
        ("response", pa.string()),
        ("media", pa.list_(pa.string())),
        ("num_tiles", pa.list_(pa.int32())),
        ("num_input_tokens", pa.int32()),
        ("num_output_tokens", pa.int32()),
        ("finish_reason", pa.string()),
        ("media_sizes", pa.list_(pa.struct([("width", pa.int32()), ("height", pa.int32())]))),
        (
            "boxes",
            pa.list_(
                pa.struct(
                    [
                        ("label", pa.string()),
                        ("x1", pa.float64()),
                        ("y1", pa.float64()),
                        ("x2", pa.float64()),
                        ("y2", pa.float64()),
                    ]
                )
            ),
        ),
        ("parse_error", pa.string()),
        ("num_frames", pa.int32()),
        ("frame_indices", pa.list_(pa.int32())),
        ("frame_timestamps", pa.list_(pa.float64())),
        ("page", pa.int32()),
        ("num_pages", pa.int32()),
        ("error", pa.string()),
        ("error_stage", pa.string()),
        ("error_type", pa.string()),
        ("model", pa.string()),
        ("run_id", pa.string()),
        ("source_version", pa.string()),
        ("config_fingerprint", pa.string()),
    ]
)

# The output's own columns besides OUTPUT_SCHEMA's (`parsed`: json tasks).
EXTRA_OUTPUT_NAMES = ("parsed",)
# Manifest columns carried between the stages (pass-through and template columns: `passthrough.py`) travel as
# `in.<name>`, so that no user column can collide with the pipeline's own (`source`, `tasks`, `error`, ...).
CARRIED_PREFIX = "in."


def carried(name: str) -> str:
    """The column name a manifest column travels under between the stages."""
    return CARRIED_PREFIX + name


def output_names() -> tuple[str, ...]:
    return (*OUTPUT_SCHEMA.names, *EXTRA_OUTPUT_NAMES)


def clash_problem(renames: dict[str, str], option: str = "input.passthrough_columns") -> str | None:
    """Why a pass-through mapping (manifest column -> output name) cannot be written, or None."""
    taken = set(output_names())
    clashes = [(source, name) for source, name in renames.items() if name in taken]
    if clashes:
        source, name = clashes[0]
        example = f"{{{source}: input_{name}}}"
        names = ", ".join(f"`{n}`" for _, n in clashes)
        return (
            f"{names} {'is a column' if len(clashes) == 1 else 'are columns'} the output already has (see the "
            f"output schema); rename in the output with a mapping, e.g. {option}: {example}"
        )
    seen: dict[str, str] = {}
    for source, name in renames.items():
        if not name:
            return f"{option}: the output name of `{source}` is empty"
        if name in seen:
            return f"{option}: `{seen[name]}` and `{source}` would both be written as `{name}`"
        seen[name] = source
    return None
