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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from internvl_batch.errors import TaskError
from internvl_batch.grounding import parse_boxes
from internvl_batch.structured import JsonAnswerParser, check_schema

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
GROUNDING = "Please provide the bounding box coordinate of the region this sentence describes: <ref>{expression}</ref>"
DEFAULT_JSON_INSTRUCTION = "Answer with only a JSON object that follows this JSON Schema:\n{schema}"


# What is read from an answer, into the output's `boxes`, `parsed` and `parse_error` columns.
Reading = tuple[list[dict] | None, Any, str | None]
# (answer, the row's first media size {width, height} or None, the row's `expression`, the job's JSON parser or
# None) -> Reading. It never raises: what cannot be read is the `parse_error`.
AnswerReader = Callable[[str, dict | None, str | None, JsonAnswerParser | None], Reading]


def read_text(answer: str, size: dict | None, expression: str | None, json_parser: JsonAnswerParser | None) -> Reading:
    """A text answer: the response is the whole output; nothing is read from it."""
    return None, None, None


def read_boxes(answer: str, size: dict | None, expression: str | None, json_parser: JsonAnswerParser | None) -> Reading:
    """Boxes in pixels of the row's first image (`grounding.py`); what does not parse is a `ground:` warning. A
    row without a media size has nothing to scale the boxes by: nothing is read."""
    if not size:
        return None, None, None
    result = parse_boxes(answer, size["width"], size["height"], expression)
    return result.boxes, None, ("ground: " + "; ".join(result.warnings)) if result.warnings else None


def read_json(answer: str, size: dict | None, expression: str | None, json_parser: JsonAnswerParser | None) -> Reading:
    """The answer's JSON, validated against `task.json_schema` (`structured.py`); a job without a schema has no
    parser, and reads nothing."""
    if json_parser is None:
        return None, None, None
    parsed, error = json_parser(answer)
    return None, parsed, error


@dataclass(frozen=True)
class Task:
    """One task, whole: how its question is made from a row, its token limit, how its answer is read (`read`:
    `read_text`; `read_boxes` into the `boxes` column; `read_json` into `parsed`), and what it needs from the
    job's config. Adding a task is adding one entry to `TASKS` (and its row in the README's table)."""

    name: str
    question: Callable[[dict, object], str]  # (row fields, TaskConfig) -> the question, or raises TaskError
    max_new_tokens: int | None  # None: generation.max_new_tokens
    read: AnswerReader = read_text
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
        Task("ground", _grounding, 128, read=read_boxes),
        Task(
            "custom",
            lambda row, config: _fill(config.template, row, "custom"),
            None,
            config_problem=lambda config: None if config.template else "the custom task needs task.template",
        ),
        Task("json", _json_question, 512, read=read_json, config_problem=_json_config_problem),
    )
}


def unknown_task_problem(names: Iterable[str], *, auto: bool = True, every: bool = False) -> str | None:
    """None when each of `names` is a task in `TASKS` (or `auto`, where `auto` is true); otherwise what is wrong:
    the first name that is not (`unknown task 'x'; presets: ...`), or with `every` all of them
    (`unknown task(s) ['x', 'y']; presets: ...`). The one check of task names: the config's, a row's."""
    unknown = [name for name in names if name not in TASKS and not (auto and name == "auto")]
    if not unknown:
        return None
    named = f"task(s) {unknown}" if every else f"task {unknown[0]!r}"
    return f"unknown {named}; presets: {', '.join(TASKS)}"


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
        if problem := unknown_task_problem([task_config.name, *(task_config.tasks or [])]):
            raise ValueError(problem)

    def tasks_for(self, row_task: str | None, question: str | None) -> list[str]:
        if self.config.tasks:
            return list(self.config.tasks)
        name = row_task or self.config.name
        if name == "auto":
            name = "vqa" if question else "caption"
        if problem := unknown_task_problem([name]):
            raise TaskError(problem)
        return [name]

    def max_new_tokens(self, task: str) -> int:
        if task in self.config.max_new_tokens:
            return self.config.max_new_tokens[task]
        preset = TASKS[task].max_new_tokens
        return min(preset, self.cap) if preset else self.cap

    def question(self, task: str, row: dict) -> str:
        """The question for `task` on `row` (before the image markers are added)."""
        return TASKS[task].question(row, self.config)
