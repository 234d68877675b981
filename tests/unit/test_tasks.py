"""Task presets, grounding boxes and structured answers."""

import pyarrow as pa
import pytest
from pydantic import BaseModel

from internvl_batch.config import TaskConfig
from internvl_batch.config_loader import load_config
from internvl_batch.errors import ConfigError, TaskError
from internvl_batch.grounding import parse_boxes
from internvl_batch.structured import JsonAnswerParser, arrow_type
from internvl_batch.tasks import GROUNDING, SHORT_ANSWER, TaskPrompter

BASE = {"input": {"manifests": "m.jsonl"}, "output": {"path": "o"}, "model": {"path": "tiny"}}


def prompter(**task):
    return TaskPrompter(TaskConfig(**task), 1024)


def test_reference_prompts():
    p = prompter()
    assert p.question("caption", {}) == "Please describe the image shortly."
    assert p.question("caption_detailed", {}) == "Please describe the image in detail."
    assert p.question("caption_one_sentence", {}) == "Provide a one-sentence caption for the provided image."
    assert p.question("ocr", {}) == "Please recognize the text in the image."
    assert p.question("vqa_short", {"question": "What colour is the car?"}) == (
        "What colour is the car?\nAnswer the question using a single word or phrase."
    )
    assert SHORT_ANSWER == "\nAnswer the question using a single word or phrase."
    assert p.question("ground", {"expression": "the red car"}) == (
        "Please provide the bounding box coordinate of the region this sentence describes: <ref>the red car</ref>"
    )
    assert GROUNDING.startswith("Please provide the bounding box coordinate")


def test_auto_task_and_row_override():
    p = prompter()
    assert p.tasks_for(None, None) == ["caption"]
    assert p.tasks_for(None, "What is it?") == ["vqa"]
    assert p.tasks_for("ocr", "ignored") == ["ocr"]
    with pytest.raises(TaskError, match="unknown task 'summarise'"):
        p.tasks_for("summarise", None)
    assert prompter(tasks=["caption", "ocr"]).tasks_for("vqa", "q") == ["caption", "ocr"]


def test_custom_template_and_missing_columns():
    p = prompter(name="custom", template="Describe the {category} in this photo, seen from {angle}.")
    assert (
        p.question("custom", {"category": "dog", "angle": "above"})
        == "Describe the dog in this photo, seen from above."
    )
    with pytest.raises(TaskError, match="needs column\\(s\\) angle, missing in this row"):
        p.question("custom", {"category": "dog", "angle": None})


def test_tasks_that_need_row_fields():
    p = prompter()
    with pytest.raises(TaskError, match="vqa needs a `question`"):
        p.question("vqa", {"question": None})
    with pytest.raises(TaskError, match="ground needs an `expression`"):
        p.question("ground", {})


def test_max_new_tokens_presets_cap_and_override():
    p = TaskPrompter(TaskConfig(max_new_tokens={"ocr": 4096}), 256)
    assert p.max_new_tokens("vqa_short") == 16
    assert p.max_new_tokens("caption_detailed") == 256  # capped by generation.max_new_tokens
    assert p.max_new_tokens("ocr") == 4096  # explicit per-task limits win
    assert TaskPrompter(TaskConfig(name="custom", template="{x}"), 300).max_new_tokens("custom") == 300


@pytest.mark.parametrize(
    "task,message",
    [
        ({"name": "custom"}, "custom task needs task.template"),
        ({"name": "json"}, "json task needs task.json_schema"),
        ({"tasks": ["caption", "poem"]}, "unknown task"),
        (
            {"name": "json", "json_schema": {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}]}}}},
            "cannot type",
        ),
    ],
)
def test_task_config_fails_fast(task, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, base={**BASE, "task": task})


# Grounding answers as the model writes them.
@pytest.mark.parametrize(
    "text,expected,warnings",
    [
        ("<ref>the cat</ref><box>[[100, 200, 300, 400]]</box>", [("the cat", 100, 100, 300, 200)], 0),
        (
            "<ref>cars</ref><box>[[0, 0, 500, 500], [500, 500, 1000, 1000]]</box>",
            [("cars", 0, 0, 500, 250), ("cars", 500, 250, 1000, 500)],
            0,
        ),
        (
            "<ref>a</ref><box>[[10,20,30,40]]</box> and <ref>b</ref><box>[[50, 60, 70, 80]]</box>",
            [("a", 10, 10, 30, 20), ("b", 50, 30, 70, 40)],
            0,
        ),
        ("<ref>x</ref><box>[[[100, 200, 300, 400]]]</box>", [("x", 100, 100, 300, 200)], 0),  # nested brackets
        ("<ref>x</ref><box>[[-20, 100, 1200, 400]]</box>", [("x", 0, 50, 1000, 200)], 1),  # out of range: clamped
        ("<ref>x</ref><box>[[300, 400, 100, 200]]</box>", [("x", 100, 100, 300, 200)], 1),  # corners swapped
        ("<ref>x</ref><box>[[100, 200, 300]]</box>", [], 1),  # three numbers
        ("I cannot see that in the image.", [], 1),
        ("<ref>x</ref><box>garbage</box><box>[[1, 2, 3, 4]]</box>", [("x", 1, 1, 3, 2)], 1),
    ],
)
def test_box_parsing_in_pixels(text, expected, warnings):
    result = parse_boxes(text, width=1000, height=500)
    got = [
        (b["label"], round(b["x1"], 6), round(b["y1"], 6), round(b["x2"], 6), round(b["y2"], 6)) for b in result.boxes
    ]
    assert got == [(label, *map(float, coords)) for label, *coords in expected]
    assert len(result.warnings) == warnings


def test_boxes_use_the_true_image_size():
    # A 4000x3000 photo rotated by EXIF is 3000 wide and 4000 tall: the same answer maps differently.
    upright = parse_boxes("<box>[[500, 500, 1000, 1000]]</box>", 4000, 3000, "thing").boxes[0]
    rotated = parse_boxes("<box>[[500, 500, 1000, 1000]]</box>", 3000, 4000, "thing").boxes[0]
    assert (upright["x1"], upright["y1"], upright["x2"], upright["y2"]) == (2000, 1500, 4000, 3000)
    assert (rotated["x1"], rotated["y1"], rotated["x2"], rotated["y2"]) == (1500, 2000, 3000, 4000)
    assert upright["label"] == "thing"  # no <ref>: the expression asked about


class Person(BaseModel):
    name: str
    age: int


class Label(BaseModel):
    species: str
    count: int
    tags: list[str]
    people: list[Person]


def test_pydantic_schema_types_the_column():
    t = arrow_type(JsonAnswerParser(Label.model_json_schema()).schema)
    assert t == pa.struct(
        [
            ("species", pa.string()),
            ("count", pa.int64()),
            ("tags", pa.list_(pa.string())),
            ("people", pa.list_(pa.struct([("name", pa.string()), ("age", pa.int64())]))),
        ]
    )


def test_json_answers_parsed_and_validated():
    parser = JsonAnswerParser(Label.model_json_schema())
    ok = '```json\n{"species": "cat", "count": 2, "tags": ["indoor"], "people": [{"name": "Ann", "age": 30}]}\n```'
    value, error = parser(ok)
    assert error is None and value["people"][0]["age"] == 30
    assert pa.array([value], parser.type)[0].as_py() == value  # fits the typed column
    value, error = parser('Here: {"species": "cat", "count": "two", "tags": [], "people": []}')
    assert value is None and error.startswith("json: does not match the schema at count:")
    assert parser("no json here")[1] == "json: no JSON object in the answer"
    assert parser('{"species": "cat", ')[1].startswith("json: not valid JSON")


def test_the_registry_is_the_one_list_of_tasks():
    """README's task table, the config's description and the registry name the same tasks."""
    import re
    from pathlib import Path

    from internvl_batch.config import TaskConfig
    from internvl_batch.tasks import TASKS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = set(re.findall(r"^\| `(\w+)` \| ", readme.split("### Tasks", 1)[1].split("\n### ", 1)[0], re.M))
    assert table == set(TASKS)
    described = TaskConfig.model_fields["name"].description
    assert all(name in described for name in TASKS)


def test_each_task_reads_its_answer():
    """`Task.read`: boxes for `ground` (pixels of the row's first image), validated JSON for `json`, nothing for
    the text tasks; what cannot be read is the parse error, and a row without what reading needs reads nothing."""
    from internvl_batch.tasks import TASKS

    parser, size = JsonAnswerParser(Person.model_json_schema()), {"width": 1000, "height": 500}
    boxes = [{"label": "a", "x1": 0.0, "y1": 0.0, "x2": 500.0, "y2": 250.0}]
    assert TASKS["ground"].read("<box>[[0, 0, 500, 500]]</box>", size, "a", parser) == (boxes, None, None)
    assert TASKS["ground"].read("no box", size, "a", parser) == ([], None, "ground: no <box> in the answer")
    assert TASKS["ground"].read("<box>[[0, 0, 500, 500]]</box>", None, "a", parser) == (None, None, None)
    person = '{"name": "Ann", "age": 30}'
    assert TASKS["json"].read(person, size, None, parser) == (None, {"name": "Ann", "age": 30}, None)
    assert TASKS["json"].read("{}", size, None, parser)[2].startswith("json: does not match the schema")
    assert TASKS["json"].read(person, size, None, None) == (None, None, None)
    assert TASKS["caption"].read(person, size, "a", parser) == (None, None, None)


def test_unknown_task_names_are_checked_once_and_said_as_each_caller_says_them():
    from internvl_batch.tasks import TASKS, unknown_task_problem

    presets = ", ".join(TASKS)
    assert unknown_task_problem(["caption", "auto"]) is None
    assert unknown_task_problem(["poem", "auto", "ode"]) == f"unknown task 'poem'; presets: {presets}"
    assert unknown_task_problem(["poem", "ode"], every=True) == f"unknown task(s) ['poem', 'ode']; presets: {presets}"
    assert unknown_task_problem(["auto"], auto=False, every=True) == f"unknown task(s) ['auto']; presets: {presets}"
    with pytest.raises(ValueError, match="^unknown task 'poem'; presets: caption, "):
        TaskPrompter(TaskConfig.model_construct(name="poem", tasks=None), 16)  # a config not validated
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['auto'\]; presets: caption, "):
        load_config(None, base={**BASE, "task": {"tasks": ["caption", "auto"]}})
