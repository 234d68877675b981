"""Config sections of what to ask: the task (prompts, presets, per-task limits) and prompt escaping."""

from __future__ import annotations

import json

from pydantic import Field, model_validator

from internvl_batch.config.base import Section
from internvl_batch.tasks import TASKS, unknown_task_problem


class PromptConfig(Section):
    escape_special_tokens: bool = Field(
        False,
        description="Tokenize chat and control tokens written in a row's question or template fields "
        "(`<|im_end|>`, `<|im_start|>`, `<s>`, `<img>`, ...) as plain text, so that untrusted text cannot end the "
        "user turn or rewrite the prompt. Off by default: the reference tokenizes them as tokens, and so does the "
        "job then (rows without such text get the same ids either way).",
    )


class TaskConfig(Section):
    """Presets and their prompts are listed in `internvl_batch/tasks.py` and the README."""

    name: str = Field(
        "auto",
        description=f"Task of rows without a `task` column: {', '.join(TASKS)}; auto = vqa for rows with a "
        "`question`, caption for the others.",
    )
    tasks: list[str] | None = Field(
        None,
        description="Run several tasks on every row in one pass (e.g. [caption, ocr]): each image is fetched "
        "and tiled once; one output row per (id, task). Overrides `name` and the rows' `task` column.",
    )
    prompts: dict[str, str] = Field(
        default_factory=dict,
        description="Replace a fixed preset prompt, e.g. {caption: 'Describe the photo in one sentence.'}.",
    )
    template: str | None = Field(
        None,
        description="Prompt template of the `custom` task (and optionally `json`), filled from the row's "
        "columns: 'Describe the {category} in this photo'. The columns are read from the manifest automatically.",
    )
    json_schema: dict | None = Field(
        None,
        description="JSON Schema the `json` task's answers must match (e.g. a pydantic model's "
        "model_json_schema()); it also types the output's `parsed` column.",
    )
    json_instruction: str | None = Field(
        None,
        description="Instruction appended for the `json` task; {schema} is replaced by the schema. Default: "
        "'Answer with only a JSON object that follows this JSON Schema:\\n{schema}'.",
    )
    max_new_tokens: dict[str, int] = Field(
        default_factory=dict,
        description="Per-task generation limit, e.g. {ocr: 2048}; otherwise the preset's, capped by generation.max_new_tokens.",
    )

    @property
    def json_schema_text(self) -> str:
        return json.dumps(self.json_schema, ensure_ascii=False)

    @model_validator(mode="after")
    def _check(self):
        names = [self.name, *(self.tasks or [])]
        # `auto` picks a task per row: a choice for `name`, not a task to run. In `tasks` it is refused after any
        # unknown name, and named once.
        problem = unknown_task_problem(names, every=True) or unknown_task_problem(
            dict.fromkeys(self.tasks or []), auto=False, every=True
        )
        if problem:
            raise ValueError(problem)
        for name in dict.fromkeys(n for n in names if n != "auto"):
            problem = TASKS[name].config_problem(self)
            if problem:
                raise ValueError(problem)
        return self
