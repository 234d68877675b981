"""The Python API on a dataset Ray Data reads with its own CPU tasks (`read_parquet`), on a 2-CPU Ray: the run
finishes (the actor pools leave the read tasks a CPU), `base_uri` is a folder without its trailing slash, and
rows without ids get ids of their own, which also name their embedded images."""

import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.media import encode, make_photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import ray, ray.data
    root, checkpoint = sys.argv[1], sys.argv[2]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    from internvl_batch.api import Processor
    processor = Processor(
        {"model": {"path": checkpoint}, "generation": {"max_new_tokens": 2}, "fetch": {"local_roots": [root]}},
        base_uri=root + "/media",
    )
    rows = processor(ray.data.read_parquet(root + "/rows.parquet")).take_all()
    print(json.dumps([{k: r[k] for k in ("id", "status", "media", "error", "label")} for r in rows]))
    """
)


@pytest.mark.timeout(420)
def test_processor_on_read_parquet_finishes_on_two_cpus(tmp_path, tiny_checkpoint):
    (tmp_path / "media").mkdir()
    photo = encode(make_photo(64, 48), "JPEG")
    (tmp_path / "media" / "a.jpg").write_bytes(photo)
    table = pa.table(
        {
            "id": pa.array(["a", None, None], pa.string()),
            "image": pa.array(["a.jpg", None, "a.jpg"], pa.string()),
            "images": pa.array([None, [photo], None], pa.list_(pa.binary())),
            "label": ["given id", "embedded", "no id"],
        }
    )
    pq.write_table(table, tmp_path / "rows.parquet")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(tiny_checkpoint)],
        capture_output=True,
        text=True,
        env=env,
        timeout=360,  # before the fix it waited for ever: "Active & requested resources: 3/2 CPU"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["label"]: row for row in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert {label: row["status"] for label, row in rows.items()} == dict.fromkeys(rows, "ok"), rows
    assert rows["given id"]["id"] == "a"
    assert rows["given id"]["media"] == [str(tmp_path / "media" / "a.jpg")]  # the folder, not its parent
    embedded, no_id = rows["embedded"]["id"], rows["no id"]["id"]
    assert embedded.startswith("row:") and no_id.startswith("row:") and embedded != no_id
    assert rows["embedded"]["media"] == [f"{embedded}#1"]  # was "None#1"
