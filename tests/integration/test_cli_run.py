"""`internvl-batch run` and `demo` as a user runs them: exit codes, one-line errors, the demo end to end."""

import glob
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

CLI = [sys.executable, "-m", "internvl_batch.cli"]


def run(args, tmp_path, **kwargs):
    env = {**os.environ, "INTERNVL_BATCH_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(CLI + args, capture_output=True, text=True, env=env, timeout=600, **kwargs)


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
def test_demo_end_to_end(tmp_path):
    proc = run(["demo", "--output", str(tmp_path / "demo")], tmp_path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "random weights" in proc.stdout and "OpenGVLab/InternVL2_5-4B" in proc.stdout
    rows = [r for f in glob.glob(str(tmp_path / "demo" / "*.parquet")) for r in pq.read_table(f).to_pylist()]
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
    summary = json.loads((tmp_path / "demo" / "_summary.json").read_text())
    assert summary["rows_ok"] == len(expected) and summary["results_written"] == len(manifest)
    assert summary["one_row_per_input"]
