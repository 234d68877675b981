"""Tasks: what to ask for each row, how many tokens to allow, and how to read the answer (`TASKS`, one entry each).

| task | prompt | max_new_tokens | output |
|---|---|---|---|
| `caption` | "Please describe the image shortly." (model card) | 128 | text |
| `caption_detailed` | "Please describe the image in detail." (model card) | 512 | text |
| `caption_one_sentence` | "Provide a one-sentence caption for the provided image." (evaluations) | 64 | text |
| `ocr` | "Please recognize the text in the image." (training prompt) | 1024 | text |
| `vqa` | the row's `question` | 256 | text |
| `vqa_short` | the row's `question` + "\\nAnswer the question using a single word or phrase." (reference) | 16 | text |
| `ground` | "Please provide the bounding box coordinate of the region this sentence describes: <ref>{expression}</ref>" (reference) | 128 | `boxes` in pixels |
| `custom` | `task.template` filled from the row's columns, e.g. "Describe the {category} in this photo" | generation.max_new_tokens | text |
| `json` | the row's `question` or `task.template`, plus `task.json_instruction` with `task.json_schema` | 512 | `parsed` (typed) |

`task.name: auto` (the default) picks `vqa` for rows with a `question` and `caption` for the others. A row's
`task` column overrides the job's task; `task.tasks` runs several tasks on every row (each image fetched and
tiled once; one output row per (id, task)). `generation.max_new_tokens` caps every preset;
`task.max_new_tokens` sets a task's limit explicitly.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

from internvl_batch.errors import TaskError

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
GROUNDING = "Please provide the bounding box coordinate of the region this sentence describes: <ref>{expression}</ref>"
DEFAULT_JSON_INSTRUCTION = "Answer with only a JSON object that follows this JSON Schema:\n{schema}"


@dataclass(frozen=True)
class Task:
    """One task, whole: how its question is made from a row, its token limit, how its answer is read (`output`:
    `text`, `boxes` into the `boxes` column, `json` into `parsed`), and what it needs from the job's config.
    Adding a task is adding one entry to `TASKS`."""

    name: str
    question: Callable[[dict, object], str]  # (row fields, TaskConfig) -> the question, or raises TaskError
    max_new_tokens: int | None  # None: generation.max_new_tokens
    output: str = "text"
    config_problem: Callable[[object], str | None] = lambda config: None  # a problem with TaskConfig, or None


def _fixed(name: str, prompt: str, max_new_tokens: int) -> Task:
    """A task whose question is a fixed prompt (replaceable with `task.prompts`)."""
    return Task(name, lambda row, config: config.prompts.get(name) or prompt, max_new_tokens)


def _row_question(task: str, suffix: str = ""):
    def question(row: dict, config) -> str:
        if not row.get("question"):
            raise TaskError(f"task {task} needs a `question`")
        return row["question"] + suffix

    return question


def _grounding(row: dict, config) -> str:
    expression = row.get("expression") or row.get("question")
    if not expression:
        raise TaskError("task ground needs an `expression` (or `question`) naming what to locate")
    return GROUNDING.format(expression=expression)


def _fill(template: str | None, row: dict, task: str) -> str:
    if not template:
        raise TaskError(f"task {task} needs task.template")
    missing = [f for f in template_fields(template) if row.get(f) is None]
    if missing:
        raise TaskError(f"task {task}: the template needs column(s) {', '.join(missing)}, missing in this row")
    return template.format(**{f: row[f] for f in template_fields(template)})


def _json_question(row: dict, config) -> str:
    """The row's question or the template, then the schema instruction."""
    base = _fill(config.template, row, "json") if config.template else row.get("question") or ""
    instruction = (config.json_instruction or DEFAULT_JSON_INSTRUCTION).format(schema=config.json_schema_text)
    return f"{base}\n{instruction}" if base else instruction


def _json_config_problem(config) -> str | None:
    if not config.json_schema:
        return "the json task needs task.json_schema"
    from internvl_batch.structured import check_schema

    check_schema(config.json_schema)  # raises ValueError naming what is wrong
    return None


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        _fixed("caption", "Please describe the image shortly.", 128),
        _fixed("caption_detailed", "Please describe the image in detail.", 512),
        _fixed("caption_one_sentence", "Provide a one-sentence caption for the provided image.", 64),
        _fixed("ocr", "Please recognize the text in the image.", 1024),
        Task("vqa", _row_question("vqa"), 256),
        Task("vqa_short", _row_question("vqa_short", SHORT_ANSWER), 16),
        Task("ground", _grounding, 128, output="boxes"),
        Task(
            "custom",
            lambda row, config: _fill(config.template, row, "custom"),
            None,
            config_problem=lambda config: None if config.template else "the custom task needs task.template",
        ),
        Task("json", _json_question, 512, output="json", config_problem=_json_config_problem),
    )
}


def template_fields(template: str | None) -> list[str]:
    """Row columns a `{column}` template reads."""
    if not template:
        return []
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


class TaskPrompter:
    """Resolves each row's tasks and builds their questions; configure once from `TaskConfig`."""

    def __init__(self, task_config, generation_max_new_tokens: int) -> None:
        self.config = task_config
        self.cap = generation_max_new_tokens
        for name in [task_config.name, *(task_config.tasks or [])]:
            if name != "auto" and name not in TASKS:
                raise ValueError(f"unknown task {name!r}; presets: {', '.join(TASKS)}")

    def tasks_for(self, row_task: str | None, question: str | None) -> list[str]:
        if self.config.tasks:
            return list(self.config.tasks)
        name = row_task or self.config.name
        if name == "auto":
            name = "vqa" if question else "caption"
        if name not in TASKS:
            raise TaskError(f"unknown task {name!r}; presets: {', '.join(TASKS)}")
        return [name]

    def max_new_tokens(self, task: str) -> int:
        if task in self.config.max_new_tokens:
            return self.config.max_new_tokens[task]
        preset = TASKS[task].max_new_tokens
        return min(preset, self.cap) if preset else self.cap

    def question(self, task: str, row: dict) -> str:
        """The question for `task` on `row` (before the image markers are added)."""
        return TASKS[task].question(row, self.config)
