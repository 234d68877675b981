"""`internvl-batch export --ray` on the shared local Ray cluster: the partitions as Ray tasks write what the
export in one process writes."""

import pytest

from internvl_batch.cli import main
from internvl_batch.export import rows as export_rows
from tests.unit.export.rows import write_output

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_export_on_ray_writes_what_the_export_in_one_process_writes(ray_local, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "out")
    write_output(out)
    monkeypatch.setattr(export_rows, "PARTITION_BYTES", 1)  # a partition per result file's worth: several tasks
    # Documents: a document's pages lie in files of two runs, so each must meet its pages in one partition.
    assert main(["export", out, "--format", "documents", "--out", str(tmp_path / "local" / "d.jsonl"), "--local"]) == 0
    assert main(["export", out, "--format", "documents", "--out", str(tmp_path / "ray" / "d.jsonl"), "--ray"]) == 0
    local, on_ray = capsys.readouterr().out.splitlines()
    assert on_ray.split(": ", 1)[1].split(" in ")[0] == local.split(": ", 1)[1].split(" in ")[0]
    shards = sorted((tmp_path / "ray").glob("d-*.jsonl"))  # a partition's shards: d-<partition>-<k>.jsonl
    assert len(shards) > 1 and all(len(s.name) == len("d-00000-0000.jsonl") for s in shards)
    lines = sorted(line for s in shards for line in s.read_text("utf-8").splitlines())
    assert lines == sorted((tmp_path / "local" / "d.jsonl").read_text("utf-8").splitlines()) and len(lines) == 3
