"""Pass-through columns through real runs on a real Ray cluster: user columns named like the pipeline's own
(`source`, `tasks`) come out as the user wrote them, a renamed `status` (img2dataset writes one) keeps its
values, and a resumed run whose values have another type keeps the output's schema, so that every reader
still merges the result files. The two runs are `two_runs.py`'s (their output is also read by every reader in
`test_interop_outputs.py`)."""

import datasets
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from internvl_batch.config import StorageConfig
from internvl_batch.results import read_results, result_files
from tests.integration.two_runs import ROWS
from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_user_columns_keep_their_names_values_and_types_across_runs(ray_local, two_runs, tmp_path):
    # The first run: img0..img3, `width` int64; the second (resumed over a grown manifest): img4 and img5,
    # `width` written as text, "1200" and "1000px" (not a number at all).
    assert two_runs.second["rows_processed"] == 2
    rows = {r["id"]: r for r in read_results(str(two_runs.out)).to_pylist()}
    ids = [f"img{i}" for i in range(ROWS)]
    assert [rows[k]["source"] for k in ids] == ["laion", "coyo", "laion", "coyo", "laion", "cc12m"]
    assert [rows[k]["tasks"] for k in ids] == [["keep"], [], [], ["a", "b"], ["x"], []]
    assert [rows[k]["task"] for k in ids] == ["caption"] * ROWS  # ours, beside theirs
    assert [rows[k]["download_status"] for k in ids] == ["success"] * 5 + ["failed"]
    assert [rows[k]["width"] for k in ids] == [320, 640, 800, 1024, 1200, None]
    assert [rows[k]["status"] for k in ids[:5]] == ["ok"] * 5
    assert rows["img5"]["status"] == "error" and rows["img5"]["error_stage"] == "manifest"
    assert "pass-through column `width` holds '1000px'" in rows["img5"]["error"]

    files = result_files(str(two_runs.out), StorageConfig())
    assert len(files) == 3  # the first run's two (2 rows each) and the second run's one
    # Every file has the first run's schema, so readers that merge files by schema read them all.
    assert pads.dataset(files, format="parquet").to_table().schema.field("width").type == pa.int64()
    assert pl.read_parquet(files)["width"].to_list().count(None) == 1
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))["train"]
    assert loaded.num_rows == ROWS and loaded.features["width"].dtype == "int64"


def test_the_python_api_keeps_a_users_source_and_refuses_a_silent_status(ray_local, tmp_path, tiny_checkpoint):
    import ray

    from internvl_batch.api import Processor

    (tmp_path / "p.jpg").write_bytes(encode(make_photo(64, 48, seed=2), "JPEG"))
    items = [{"id": "a", "image": str(tmp_path / "p.jpg"), "source": "laion", "status": "success"}]
    processor = Processor(
        {"model": {"path": str(tiny_checkpoint)}, "generation": {"max_new_tokens": 2}}, base_uri=str(tmp_path)
    )
    with pytest.raises(ValueError, match=r"`status` is a column the output already has.*\{status: input_status\}"):
        processor(ray.data.from_items(items))
    rows = processor(ray.data.from_items(items), passthrough={"source": "source", "status": "download_status"})
    row = rows.take_all()[0]
    assert row["source"] == "laion" and row["download_status"] == "success" and row["status"] == "ok"
