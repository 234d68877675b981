"""`internvl-batch run` and `demo` as a user runs them: exit codes, one-line errors, the demo end to end."""

import glob
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from internvl_batch.output_dir import data_path, read_summary, report_path
from tests.integration.conftest import run_cli as run


@pytest.mark.parametrize(
    "yaml_text,override,message",
    [
        (
            "input: {manifests: m.jsonl}\noutput: {path: o}\nmodel: {path: tiny}\nmodle: {}\n",
            None,
            "modle: unknown key",
        ),
        (
            "input: {manifests: /no/such/m.jsonl}\noutput: {path: OUT}\nmodel: {path: tiny}\n",
            None,
            "manifest /no/such/m.jsonl: no such file",
        ),
        (
            "input: {manifests: m.jsonl}\noutput: {path: o}\nmodel: {path: tiny}\n",
            "generation.max_new_tokens=lots",
            "generation.max_new_tokens: Input should be a valid integer",
        ),
        (
            "input: {manifests: m.jsonl}\noutput: {path: o}\nmodel: {path: /no/model}\n",
            None,
            "neither a local directory",
        ),
    ],
)
def test_config_errors_are_one_clear_line(tmp_path, yaml_text, override, message, capsys, monkeypatch):
    from internvl_batch.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(yaml_text.replace("OUT", str(tmp_path / "out")))
    args = ["run", str(config)] + (["--set", override] if override else [])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INTERNVL_BATCH_CACHE", str(tmp_path / "cache"))
    assert main(args) == 2  # in this process: each case costs a CLI start otherwise
    stderr = capsys.readouterr().err
    assert message in stderr
    assert "Traceback" not in stderr and len([line for line in stderr.splitlines() if "error" in line]) == 1


def test_a_config_error_exits_2_with_one_line_from_the_command_line(tmp_path):
    (tmp_path / "c.yaml").write_text("input: {manifests: m.jsonl}\noutput: {path: o}\nmodel: {path: tiny}\nmodle: {}\n")
    proc = run(["run", str(tmp_path / "c.yaml")], tmp_path, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    expected = f"internvl-batch: error: {tmp_path / 'c.yaml'}: invalid configuration: modle: unknown key"
    assert proc.stderr.strip().splitlines() == [expected]


@pytest.mark.integration
@pytest.mark.slow
def test_demo_end_to_end(demo):
    proc, tmp_path = demo
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "random weights" in proc.stdout and "OpenGVLab/InternVL2_5-4B" in proc.stdout
    assert f"open {report_path(tmp_path / 'demo')} in a browser" in proc.stdout
    assert os.path.getsize(report_path(tmp_path / "demo")) > 10_000
    rows = [r for f in glob.glob(f"{data_path(tmp_path / 'demo')}/*.parquet") for r in pq.read_table(f).to_pylist()]
    manifest = [
        json.loads(line)
        for line in open(os.path.join(os.path.dirname(__file__), "../../internvl_batch/assets/samples/manifest.jsonl"))
    ]
    # The scanned two-page PDF has one row per page; every other input row has one row.
    expected = [m["id"] for m in manifest if "document" not in m] + ["scanned-report#p1", "scanned-report#p2"]
    assert sorted(r["id"] for r in rows) == sorted(expected)
    assert all(r["status"] == "ok" and r["response"] is not None for r in rows)
    pages = {r["id"]: (r["page"], r["num_pages"], r["task"], r["num_tiles"]) for r in rows if r["page"] is not None}
    assert pages == {"scanned-report#p1": (1, 2, "ocr", [7]), "scanned-report#p2": (2, 2, "ocr", [7])}
    summary = read_summary(tmp_path / "demo")
    assert summary["rows_ok"] == len(expected) and summary["results_written"] == len(manifest)
    assert summary["one_row_per_input"]


@pytest.mark.integration
@pytest.mark.slow
def test_the_report_in_a_headless_browser(demo, tmp_path):
    """The demo's report, with rows a real model would add (a grounding box, failures, a hostile caption),
    rendered by Debian's Chromium: what the page shows is read from the page, and a screenshot is taken."""
    import shutil

    from internvl_batch.cli import main
    from tests.unit.report.test_report import HOSTILE, write_rows

    if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
        if os.environ.get("INTERNVL_BATCH_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here: apt-get install chromium chromium-driver")
        pytest.skip("needs Debian's chromium and chromium-driver (CI installs them and requires this test)")
    proc, demo_dir = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    shutil.copytree(demo_dir / "demo", out)
    samples = os.path.join(os.path.dirname(__file__), "../../internvl_batch/assets/samples")
    photo = os.path.abspath(os.path.join(samples, "mountains.jpg"))
    from PIL import Image

    width, height = Image.open(photo).size
    box = {"label": "peak", "x1": width * 0.25, "y1": height * 0.5, "x2": width * 0.75, "y2": height * 0.9}
    ok = {"status": "ok", "num_tiles": [7], "num_input_tokens": 1800, "num_output_tokens": 9, "finish_reason": "stop"}
    write_rows(
        str(out),
        [
            {
                **ok,
                "id": "boxed",
                "task": "ground",
                "media": [photo],
                "response": "<ref>peak</ref><box>[[250, 500, 750, 900]]</box>",
                "media_sizes": [{"width": width, "height": height}],
                "boxes": [box],
            },
            {**ok, "id": "evil", "task": "caption", "media": [photo], "response": HOSTILE},
            {
                "id": "lost",
                "task": "caption",
                "media": ["s3://bucket/lost.jpg"],
                "error": "fetch: FetchError: s3://bucket/lost.jpg: not found",
            },
            {"id": "bad", "task": "caption", "media": [photo], "error": "decode: ImageDecodeError: " + HOSTILE},
        ],
    )
    assert main(["report", str(out), "--sample", "20"]) == 0
    page = chromium(tmp_path)
    try:
        page.get(Path(report_path(out)).as_uri())
        figures = page.execute_script("return document.querySelectorAll('#gallery figure.row').length")
        assert figures == 9 + 2  # the demo's rows (a PDF has a row per page) and the two added ok rows
        # The box sits where the row's pixels say, on the picture as displayed.
        picture, drawn = page.execute_script(
            "const f = document.querySelector(\"figure[data-id='boxed']\");"
            "const r = (e) => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; };"
            "return [r(f.querySelector('.pic img')), r(f.querySelector('rect.box'))];"
        )
        relative = [(drawn[0] - picture[0]) / picture[2], (drawn[1] - picture[1]) / picture[3]]
        relative += [drawn[2] / picture[2], drawn[3] / picture[3]]
        assert relative == pytest.approx([0.25, 0.5, 0.5, 0.4], abs=0.02), (picture, drawn)
        groups = page.execute_script("return [...document.querySelectorAll('.error-group h3')].map(h => h.textContent)")
        assert sorted(groups) == ["decode: ImageDecodeError (1 rows)", "fetch: FetchError (1 rows)"]
        assert page.execute_script("return window.__xss") is None  # the hostile caption did not run...
        shown = page.execute_script("return document.querySelector(\"figure[data-id='evil'] .answer\").textContent")
        assert shown == HOSTILE  # ...it is shown as text
        plots = page.execute_script("return document.querySelectorAll('#plots svg').length")
        assert plots == 4
        screenshot = tmp_path / "report.png"
        assert page.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    finally:
        page.quit()


def chromium(tmp_path):
    """Debian's headless Chromium through its ChromeDriver (packages chromium, chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
