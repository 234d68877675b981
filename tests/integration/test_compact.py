"""`internvl-batch compact --ray` on the shared local Ray cluster: the output's current rows, and nothing else,
for read_results, the Ray Dataset of `results_dataset` and plain Parquet readers of OUT/data."""

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import ray
import ray.data

from internvl_batch import compact
from internvl_batch.cli import main
from internvl_batch.config import StorageConfig
from internvl_batch.output_dir import data_path
from internvl_batch.results import read_results, result_files
from tests.unit.test_compact import build_output, row_set

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # 20-35 s on 2 shared cores: Ray workers, Ray Data start


def test_compact_on_ray_keeps_the_current_rows_sorted_by_id(ray_local, tmp_path, monkeypatch, capsys):
    from internvl_batch.pipeline import results_dataset

    out = build_output(tmp_path / "out")
    before = row_set(read_results(str(out)))
    monkeypatch.setattr(compact, "CHUNK_FILES", 3)  # 11 old files: 4 chunks, so 4 id partitions on the cluster

    assert main(["compact", str(out), "--ray", "--target-rows", "10"]) == 0

    assert "11 result files -> " in capsys.readouterr().out
    assert row_set(read_results(str(out))) == before
    files = result_files(str(out), StorageConfig())
    assert 4 <= len(files) <= 8
    ids = [pq.read_table(f, columns=["id"])["id"].to_pylist() for f in files]
    assert sum(ids, []) == sorted(sum(ids, [])) and len(sum(ids, [])) == len(before)
    assert row_set(_arrow(ray.data.read_parquet(data_path(str(out))))) == before
    assert row_set(pads.dataset(data_path(str(out))).to_table()) == before
    assert row_set(_arrow(results_dataset(str(out)))) == before


def _arrow(dataset) -> pa.Table:
    return pa.concat_tables(ray.get(dataset.to_arrow_refs()))
