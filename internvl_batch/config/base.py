"""The base of every config section: unknown keys are errors, assignments are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _pair(value):
    # Accept `4` as shorthand for a fixed pool `[4, 4]`.
    return (value, value) if isinstance(value, int) else value
