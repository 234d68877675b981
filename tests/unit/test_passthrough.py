"""Pass-through columns: names that clash with the output's are refused with the fix, renames work, carried
columns cannot collide with the pipeline's own, and types stay those of the output's first run."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from internvl_batch.errors import ConfigError
from internvl_batch.manifest.scan import MIXED
from internvl_batch.passthrough import carried, clash_problem, pinned_types, settle_types, to_type
from internvl_batch.stages.output import OUTPUT_SCHEMA, to_output_table
from tests.helpers import job_config, request_table


def config(passthrough):
    return job_config("tiny", "unused", input={"passthrough_columns": passthrough})


def test_a_list_maps_each_column_to_itself_and_a_mapping_renames():
    assert config(["source", "tasks", "width"]).input.passthrough_columns == {
        "source": "source",
        "tasks": "tasks",
        "width": "width",
    }
    assert config({"status": "download_status"}).input.passthrough_columns == {"status": "download_status"}


@pytest.mark.parametrize("name", ["status", "error", "id", "media", "model", "run_id", "parsed", "response"])
def test_a_column_the_output_already_has_is_refused_naming_the_rename(name):
    with pytest.raises(ConfigError) as info:
        config([name])
    message = str(info.value)
    assert f"`{name}`" in message and "input.passthrough_columns" in message
    assert f"{{{name}: input_{name}}}" in message  # the fix, as it is written in a config
    assert "\n" not in message.strip()


def test_two_columns_written_under_one_name_and_repeated_names_are_refused():
    with pytest.raises(ConfigError, match="would both be written as `label`"):
        config({"a": "label", "b": "label"})
    with pytest.raises(ConfigError, match="more than once"):
        config(["a", "a"])
    assert clash_problem({"source": "source", "x": "y"}) is None


def test_user_columns_named_like_the_pipelines_own_are_carried_not_overwritten():
    raws = [{"id": "a", "image": "x.jpg", "source": "laion", "tasks": ["t1"], "error": "user text"}]
    types = {"source": pa.string(), "tasks": pa.list_(pa.string()), "error": pa.string()}
    table = request_table(raws, "m.jsonl", passthrough_types=types)
    row = table.to_pylist()[0]
    assert row["source"] == "m.jsonl:1" and row["tasks"] == ["caption"] and row["error"] is None  # ours
    assert row[carried("source")] == "laion" and row[carried("tasks")] == ["t1"]  # theirs
    assert row[carried("error")] == "user text"


def test_output_names_follow_the_mapping():
    table = request_table(
        [{"id": "a", "image": "x.jpg", "source": "laion", "status": "success"}],
        "m.jsonl",
        passthrough_types={"source": pa.string(), "status": pa.string()},
    )
    out = to_output_table(table, "m", {"source": "source", "status": "download_status"}, "r")
    assert out.schema.names == [*OUTPUT_SCHEMA.names, "source", "download_status"]
    row = out.to_pylist()[0]
    assert row["source"] == "laion" and row["download_status"] == "success" and row["status"] == "ok"
    with pytest.raises(ValueError, match="would replace"):
        to_output_table(table, "m", {"status": "status"}, "r")


def test_a_value_that_does_not_fit_its_column_makes_an_error_row_naming_it():
    raws = [
        {"id": "a", "image": "x.jpg", "width": 1000},
        {"id": "b", "image": "x.jpg", "width": "1200"},
        {"id": "c", "image": "x.jpg", "width": "1000px"},
        {"id": "d", "image": "x.jpg"},
    ]
    table = request_table(raws, "m.jsonl", passthrough_types={"width": pa.int64()})
    assert table.schema.field(carried("width")).type == pa.int64()
    rows = {r["id"]: r for r in table.to_pylist()}
    assert [rows[k][carried("width")] for k in "abcd"] == [1000, 1200, None, None]
    assert [rows[k]["error"] for k in "abd"] == [None, None, None]
    assert rows["c"]["error"].startswith("manifest: ManifestError: pass-through column `width` holds '1000px'")
    assert "int64" in rows["c"]["error"]


def test_settled_types_keep_the_outputs():
    pinned = {"width": pa.int64(), "label": pa.string(), "score": pa.float64()}
    scanned = {"width": MIXED, "label": pa.int64(), "score": pa.int64(), "new": pa.bool_()}
    settled = settle_types(scanned, pinned)
    assert settled == {"width": pa.int64(), "label": MIXED, "score": pa.float64(), "new": pa.bool_()}
    assert settle_types({"label": pa.string()}, pinned) == {"label": pa.string()}
    assert settle_types({"label": None}, pinned) == {"label": None}


def test_conversions_are_safe_only():
    assert to_type([1, 2, None], pa.float64())[0].to_pylist() == [1.0, 2.0, None]
    array, bad = to_type([1.5, 2.0, "3", True, "x"], pa.int64())
    assert bad == [0, 4] and array.to_pylist()[1:4] == [2, 3, 1]
    assert to_type([{"a": 1}, {"a": 2}], pa.struct([("a", pa.int64())]))[1] == []


def test_pinned_types_come_from_the_newest_result_file(tmp_path):
    from internvl_batch.config import StorageConfig
    from internvl_batch.output_dir import new_run_id
    from internvl_batch.results import write_result_file

    storage = StorageConfig()
    out = str(tmp_path / "out")
    assert pinned_types(out, storage, {"width": "width"}) == {}
    base = to_output_table(
        request_table([{"id": "a", "image": "x.jpg"}], "m.jsonl", passthrough_types={}), "m", {}, "r"
    )
    first = base.append_column("px", pa.array([3], pa.int64())).append_column("tag", pa.nulls(1))
    write_result_file(first, out, storage, new_run_id())
    renames = {"width": "px", "tag": "tag", "absent": "absent"}
    assert pinned_types(out, storage, renames) == {"width": pa.int64()}  # a null column fixes nothing yet
    assert pq.read_schema(next((tmp_path / "out").rglob("part-*.parquet"))).field("px").type == pa.int64()
