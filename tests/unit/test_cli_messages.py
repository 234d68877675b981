"""What the command line says when something is wrong: config mistakes (closest key, the override named, pool
sizes as users write them), `plan` that does not fit, `inspect` on PDFs, and the line an interrupted run prints."""

import json
from pathlib import Path

import pytest

from internvl_batch.cli import main
from internvl_batch.config_loader import PAIR_MESSAGE, load_config
from internvl_batch.errors import ConfigError
from tests.media import encode, make_photo

SAMPLES = Path(__file__).resolve().parents[2] / "internvl_batch" / "assets" / "samples"
VALID = "input: {manifests: m.jsonl}\noutput: {path: out}\nmodel: {path: tiny}\n"


def error_of(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_keys_suggest_the_closest_field_of_their_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(VALID.replace("{path: tiny}", "{path: tiny, dtpye: float32}") + "generaton: {}\n")
    message = error_of(path)
    assert message.startswith(f"{path}: invalid configuration: ")
    assert "model.dtpye: unknown key (did you mean `dtype`?)" in message
    assert "generaton: unknown key (did you mean `generation`?)" in message


def test_a_key_already_given_is_not_suggested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(VALID + "modle: {}\n")  # `model` is there: the closest key left is not a match
    assert error_of(path) == f"{path}: invalid configuration: modle: unknown key"


@pytest.mark.parametrize("value", ["two", "2.5", "[1, 2, 3]", "[a, b]", "{min: 1}"])
def test_a_bad_override_is_named_after_the_override_not_the_file(tmp_path, value):
    path = tmp_path / "c.yaml"
    path.write_text(VALID)
    message = error_of(path, [f"resources.cpu_actors={value}"])
    assert message == (f"--set resources.cpu_actors=...: invalid configuration: resources.cpu_actors: {PAIR_MESSAGE}")
    assert str(path) not in message and "tuple" not in message


def test_the_pool_validators_own_check_keeps_its_message(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(VALID)
    message = error_of(path, ["resources.gpu_replicas=[4, 1]"])
    assert message.startswith("--set resources.gpu_replicas=...: invalid configuration: ")
    assert "resources.gpu_replicas: need 1 <= min <= max" in message


def test_file_and_override_errors_are_each_named_after_their_source(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(VALID + "resourcez: {}\n")
    message = error_of(path, ["generation.max_new_tokens=lots", "model.dtpye=x"])
    assert message.startswith(f"{path}: invalid configuration: resourcez: unknown key (did you mean `resources`?); ")
    assert "; --set generation.max_new_tokens=...: generation.max_new_tokens: Input should be a valid integer" in (
        message
    )
    assert "; --set model.dtpye=...: model.dtpye: unknown key (did you mean `dtype`?)" in message
    assert "lots" not in message  # override values are never quoted: they can hold secrets


def test_an_override_that_makes_an_unknown_section_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(VALID)
    assert error_of(path, ["modle.path=x"]) == "--set modle.path=...: invalid configuration: modle: unknown key"


def test_run_prints_the_override_error_on_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(VALID)
    assert main(["run", str(path), "--set", "resources.cpu_actors=two"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"internvl-batch: error: --set resources.cpu_actors=...: invalid configuration: resources.cpu_actors: "
        f"{PAIR_MESSAGE}"
    ]


@pytest.mark.slow  # builds the model on the meta device (~5 s, mostly importing transformers)
def test_plan_exits_1_when_not_even_one_row_fits(capsys):
    # The weights fit in 4 GiB, but a row of 200 tiles does not: that is "does NOT fit", exit code 1.
    assert main(["plan", "OpenGVLab/InternVL2_5-1B", "--gpu-mem", "4", "--tiles", "200"]) == 1
    out = capsys.readouterr().out
    assert "does NOT fit: the weights (1.7 GiB in all) leave no room for one row of 51520 tokens" in out
    assert main(["plan", "OpenGVLab/InternVL2_5-1B", "--gpu-mem", "80"]) == 0
    assert "fits: weights 1.7 GiB in all; largest batch that fits:" in capsys.readouterr().out


def test_inspect_reads_a_pdf_as_the_job_does(tmp_path, capsys):
    from internvl_batch.imaging import ImagePreprocessor
    from internvl_batch.imaging.document import PdfRenderer

    pdf = (SAMPLES / "scanned_report.pdf").read_bytes()
    named_as_image = tmp_path / "scan.jpg"  # a one-image row whose bytes are a PDF is a document to the job
    named_as_image.write_bytes(pdf)
    assert main(["inspect", str(SAMPLES / "scanned_report.pdf"), str(named_as_image), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["source"].rsplit("/", 1)[-1], r["page"], r["num_pages"]) for r in rows] == [
        ("scanned_report.pdf#p1", 1, 2),
        ("scanned_report.pdf#p2", 2, 2),
        ("scan.jpg#p1", 1, 2),
        ("scan.jpg#p2", 2, 2),
    ]
    pre = ImagePreprocessor()  # the job's numbers: each page rendered by its renderer and tiled by its tiler
    renderer = PdfRenderer(pre.min_num, pre.max_num, 50)
    expected = [pre.process_image(page.image).num_tiles for page in renderer.pages(renderer.open(pdf))]
    assert [r["tiles"] for r in rows] == expected * 2 and all(r["error"] is None for r in rows)
    assert rows[0]["image_tokens"] == expected[0] * 256


def test_inspect_saves_a_pdfs_tiles_per_page_and_refuses_what_is_not_a_pdf(tmp_path, capsys):
    fake = tmp_path / "fake.pdf"
    fake.write_bytes(encode(make_photo(64, 64), "PNG"))
    assert main(["inspect", str(fake)]) == 1
    assert "decode: DocumentError: not a PDF (the data looks like a PNG image)" in capsys.readouterr().out
    save = tmp_path / "tiles"
    assert main(["inspect", str(SAMPLES / "scanned_report.pdf"), "--save-tiles", str(save)]) == 0
    assert "0 file(s) and 2 PDF page(s)" in capsys.readouterr().out
    assert sorted(p.name for p in save.iterdir()) == ["p1", "p2"] and (save / "p1" / "00.png").is_file()


@pytest.mark.parametrize(
    "resume,rows,expected",
    [
        (
            True,
            12,
            "internvl-batch: interrupted: the result files written so far stay in OUT (at least 12 rows); run the "
            "same command again to resume (what they hold is not done again)",
        ),
        (
            False,
            0,
            "internvl-batch: interrupted: the result files written so far stay in OUT; this run had "
            "output.resume=false, so the same command starts over: to resume, run it with --set "
            "output.resume=true (and without --no-resume)",
        ),
    ],
)
def test_the_interrupted_line_says_what_was_kept_and_how_to_resume(tmp_path, resume, rows, expected):
    from internvl_batch.pipeline.driver import interrupted_line

    path = tmp_path / "c.yaml"
    path.write_text(VALID)
    config = load_config(path, [f"output.resume={str(resume).lower()}"])
    assert interrupted_line(config, rows) == expected.replace("OUT", str(tmp_path / "out"))
    assert interrupted_line(None, None) == "internvl-batch: interrupted before the job started; nothing was written"
