"""The vision tower runs once per image, however many tasks ask about it (`generation/features.py`)."""

import pytest

from internvl_batch.config import GenerationConfig, ModelConfig
from internvl_batch.generation.predictor import GenerationRequest, Predictor
from internvl_batch.imaging import ImagePreprocessor
from tests.helpers import job_config, prepare_rows
from tests.media import encode, make_photo

QUESTIONS = {"Describe the image.": 6, "Read the text in the image.": 4, "Is there a cat?": 2}  # task -> token limit


class VisionTower:
    """Counts the tiles the model's vision tower is called on (wrapping the real one)."""

    def __init__(self, model):
        self.inner, self.tiles, self.calls = model.model.get_image_features, 0, 0
        model.model.get_image_features = self

    def __call__(self, pixel_values, **kwargs):
        self.calls += 1
        self.tiles += int(pixel_values.shape[0])
        return self.inner(pixel_values=pixel_values, **kwargs)


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return Predictor(ModelConfig(path=str(tiny_checkpoint), dtype="float64"), GenerationConfig(max_new_tokens=6))


def _task_requests(predictor, shared: bool):
    pre = ImagePreprocessor()
    images = [pre(encode(make_photo(800, 600, seed=1), "PNG")), pre(encode(make_photo(448, 448, seed=2), "PNG"))]
    requests = []
    for number, image in enumerate(images):  # the task rows of two input rows, as the model stage gets them
        for question, limit in QUESTIONS.items():
            ids = predictor.prompts.build(question, [image.num_tiles]).input_ids
            requests.append(GenerationRequest(ids, image.tiles.copy(), limit, number if shared else None))
    return requests, sum(image.num_tiles for image in images)


def test_each_image_goes_through_the_vision_tower_once(predictor):
    tower = VisionTower(predictor.model)
    alone, tiles_per_pass = _task_requests(predictor, shared=False)
    expected = [r.output_ids for r in predictor.generate(alone)]
    assert tower.tiles == 3 * tiles_per_pass  # without sharing: once per task (13 + 1 tiles, three times)
    tower.tiles = 0
    shared, _ = _task_requests(predictor, shared=True)
    results = predictor.generate(shared)
    assert tower.tiles == tiles_per_pass == predictor.shared_features.tiles_computed
    assert [r.output_ids for r in results] == expected  # the same answers, token for token
    assert predictor.shared_features.kept == {} and predictor.shared_features.remaining == {}  # all released


def test_shared_features_survive_out_of_memory_splits(predictor):
    from tests.unit.generation.test_faults import MemoryCapacity, inject

    requests, tiles_per_pass = _task_requests(predictor, shared=True)
    expected = [r.output_ids for r in predictor.generate(requests)]
    width = max(len(r.input_ids) for r in requests)
    capacity = MemoryCapacity(positions=width)  # one row fits, two do not
    undo = inject(predictor, capacity)
    try:
        assert [r.output_ids for r in predictor.generate(requests)] == expected
    finally:
        undo()
        predictor.learned_max_tokens = None
    assert capacity.raised >= 1
    assert predictor.shared_features.tiles_computed == tiles_per_pass


def test_the_model_stage_shares_an_images_features_between_its_tasks(tiny_checkpoint, tmp_path):
    from internvl_batch.stages.generate import GenerateStage

    (tmp_path / "photo.jpg").write_bytes(encode(make_photo(800, 600), "JPEG"))
    (tmp_path / "small.jpg").write_bytes(encode(make_photo(448, 448, seed=3), "JPEG"))
    config = job_config(
        tiny_checkpoint,
        tmp_path / "out",
        generation={"max_new_tokens": 3},
        task={"tasks": ["caption", "ocr", "caption_detailed"]},
    )
    raw = [{"id": "a", "image": "photo.jpg"}, {"id": "b", "image": "small.jpg"}, {"id": "c", "image": "photo.jpg"}]
    prepared = prepare_rows(config, raw, str(tmp_path / "m.jsonl"))
    stage = GenerateStage.from_config(config, "tiny")
    tower = VisionTower(stage.predictor.model)
    out = stage(prepared)
    assert out.num_rows == 9 and set(out.column("status").to_pylist()) == {"ok"}
    assert tower.tiles == 13 + 1 + 13  # once per input row (rows a and c are different rows of the same file)
