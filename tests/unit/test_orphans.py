"""The orphans file: the keys the latest scan found without an input row, read back by `read_results(...,
drop_orphans=True)` (a PDF's page rows under their document's key), and cleared by a run without earlier
results."""

import glob

import numpy as np
import pyarrow as pa

from internvl_batch.config import StorageConfig
from internvl_batch.keys import key_hashes
from internvl_batch.orphans import clear_orphan_keys, orphan_keys, write_orphan_keys
from internvl_batch.output_dir import new_run_id
from internvl_batch.output_layout import orphans_path
from internvl_batch.results import read_results, write_result_file

STORAGE = StorageConfig()


def test_orphans_are_left_out_only_when_asked_and_until_cleared(tmp_path):
    out, run = str(tmp_path), new_run_id()
    table = pa.table(
        {
            "id": ["kept", "gone", "doc#p1", "doc#p2"],
            "task": ["caption"] * 4,
            "status": ["ok"] * 4,
            "page": pa.array([None, None, 1, 2], pa.int32()),
            "num_pages": pa.array([None, None, 2, 2], pa.int32()),
            "run_id": [run] * 4,
        }
    )
    write_result_file(table, out, STORAGE, run)
    assert len(orphan_keys(out)) == 0  # no run has scanned yet: nothing is an orphan
    write_orphan_keys(out, STORAGE, key_hashes(["gone", "doc"], ["caption", "caption"]), run)
    assert sorted(read_results(out, drop_orphans=True).column("id").to_pylist()) == ["kept"]
    assert read_results(out).num_rows == 4  # nothing is deleted
    # Users glob `OUT/**/*.parquet` (polars, duckdb): the orphans file must not look like results.
    assert [p for p in glob.glob(f"{out}/**/*.parquet", recursive=True) if "/data/" not in p] == []
    write_orphan_keys(out, STORAGE, np.zeros((0, 2), np.uint64), run)  # none found: no file at all
    assert not glob.glob(orphans_path(out)) and read_results(out, drop_orphans=True).num_rows == 4
    write_orphan_keys(out, STORAGE, key_hashes(["gone"], ["caption"]), run)
    clear_orphan_keys(out, STORAGE)
    assert read_results(out, drop_orphans=True).num_rows == 4
