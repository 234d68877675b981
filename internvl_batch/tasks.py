"""Task presets: what to ask for each row, how many tokens to allow, and how to read the answer.

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
from dataclasses import dataclass

from internvl_batch.errors import TaskError

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
GROUNDING = "Please provide the bounding box coordinate of the region this sentence describes: <ref>{expression}</ref>"
DEFAULT_JSON_INSTRUCTION = "Answer with only a JSON object that follows this JSON Schema:\n{schema}"


@dataclass(frozen=True)
class Preset:
    prompt: str | None  # fixed prompt, or None when it comes from the row / the config
    max_new_tokens: int | None  # None: generation.max_new_tokens
    output: str = "text"  # "text", "boxes" or "json"


PRESETS: dict[str, Preset] = {
    "caption": Preset("Please describe the image shortly.", 128),
    "caption_detailed": Preset("Please describe the image in detail.", 512),
    "caption_one_sentence": Preset("Provide a one-sentence caption for the provided image.", 64),
    "ocr": Preset("Please recognize the text in the image.", 1024),
    "vqa": Preset(None, 256),
    "vqa_short": Preset(None, 16),
    "ground": Preset(None, 128, "boxes"),
    "custom": Preset(None, None),
    "json": Preset(None, 512, "json"),
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
            if name != "auto" and name not in PRESETS:
                raise ValueError(f"unknown task {name!r}; presets: {', '.join(PRESETS)}")

    def tasks_for(self, row_task: str | None, question: str | None) -> list[str]:
        if self.config.tasks:
            return list(self.config.tasks)
        name = row_task or self.config.name
        if name == "auto":
            name = "vqa" if question else "caption"
        if name not in PRESETS:
            raise TaskError(f"unknown task {name!r}; presets: {', '.join(PRESETS)}")
        return [name]

    def max_new_tokens(self, task: str) -> int:
        if task in self.config.max_new_tokens:
            return self.config.max_new_tokens[task]
        preset = PRESETS[task].max_new_tokens
        return min(preset, self.cap) if preset else self.cap

    def question(self, task: str, row: dict) -> str:
        """The question for `task` on `row` (before the image markers are added)."""
        preset = PRESETS[task]
        if task in ("caption", "caption_detailed", "caption_one_sentence", "ocr"):
            return self.config.prompts.get(task) or preset.prompt
        if task in ("vqa", "vqa_short"):
            question = row.get("question")
            if not question:
                raise TaskError(f"task {task} needs a `question`")
            return question + (SHORT_ANSWER if task == "vqa_short" else "")
        if task == "ground":
            expression = row.get("expression") or row.get("question")
            if not expression:
                raise TaskError("task ground needs an `expression` (or `question`) naming what to locate")
            return GROUNDING.format(expression=expression)
        if task == "custom":
            return self._fill(self.config.template, row, "custom")
        # json: the row's question or the template, then the schema instruction
        base = self._fill(self.config.template, row, "json") if self.config.template else row.get("question") or ""
        instruction = (self.config.json_instruction or DEFAULT_JSON_INSTRUCTION).format(
            schema=self.config.json_schema_text
        )
        return f"{base}\n{instruction}" if base else instruction

    @staticmethod
    def _fill(template: str | None, row: dict, task: str) -> str:
        if not template:
            raise TaskError(f"task {task} needs task.template")
        missing = [f for f in template_fields(template) if row.get(f) is None]
        if missing:
            raise TaskError(f"task {task}: the template needs column(s) {', '.join(missing)}, missing in this row")
        return template.format(**{f: row[f] for f in template_fields(template)})
