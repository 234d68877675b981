"""The Python API's inputs and the driver's console, without Ray: actor pools sized to leave the input a CPU,
`base_uri` as a folder, ids for rows without one, one progress line per interval, Ray Data's console lines off."""

import logging
import time

import pyarrow as pa
import pytest

from internvl_batch.config import ResourcesConfig
from internvl_batch.errors import ConfigError
from internvl_batch.pipeline.sizing import PoolSizes, pool_sizes


def test_pools_that_would_hold_every_cpu_leave_one_to_the_input():
    # The default pools (one preprocessing actor, one model replica: 1 CPU each) on 2 CPUs, with an input
    # read by 1-CPU tasks: each actor gets half of the CPU left, so the 3 requests fit in 2.
    sizes = pool_sizes(ResourcesConfig(), cluster_cpus=2, input_cpus=1)
    assert sizes == PoolSizes((1, 4), 0.5, 0.5)
    assert sizes.cpu_actors[0] * sizes.cpus_per_actor + sizes.replica_cpus + 1 <= 2
    thirds = pool_sizes(ResourcesConfig(cpu_actors=[2, 4]), cluster_cpus=2, input_cpus=1)
    assert 2 * thirds.cpus_per_actor + thirds.replica_cpus <= 1 and thirds.cpus_per_actor == 0.3333


def test_pools_that_fit_are_left_as_asked():
    asked = ResourcesConfig(cpu_actors=[2, 8], cpus_per_actor=1.5)
    assert pool_sizes(asked, cluster_cpus=8, input_cpus=1) == PoolSizes((2, 8), 1.5, 1.0)
    assert pool_sizes(asked, cluster_cpus=0, input_cpus=1) == PoolSizes((2, 8), 1.5, 1.0)  # nodes still to come
    assert pool_sizes(ResourcesConfig(), cluster_cpus=1, input_cpus=0) == PoolSizes((1, 4), 0.5, 0.5)  # the job


def test_a_cluster_the_input_fills_fails_at_once_naming_the_cpus():
    with pytest.raises(ConfigError) as info:
        pool_sizes(ResourcesConfig(), cluster_cpus=1, input_cpus=1)
    assert str(info.value) == (
        "the Ray cluster has 1 CPUs and the input dataset's tasks need 1: none is left for the preprocessing "
        "actors and model replicas (they need 2 CPUs: resources.cpu_actors[0] x resources.cpus_per_actor + 1 per "
        "model replica); start Ray with at least 2 CPUs (ray.init(num_cpus=...))"
    )


@pytest.mark.parametrize(
    "base,expected",
    [
        ("/data/media/", "/data/media/x/a.jpg"),
        ("/data/media", "/data/media/x/a.jpg"),
        ("file:///data/media/", "/data/media/x/a.jpg"),
        ("s3://bucket/media/", "s3://bucket/media/x/a.jpg"),
        ("s3://bucket/media", "s3://bucket/media/x/a.jpg"),
        ("s3://bucket", "s3://bucket/x/a.jpg"),
    ],
)
def test_base_uri_is_a_folder_with_or_without_its_slash(base, expected):
    from internvl_batch.api import base_location
    from internvl_batch.manifest.rows import MediaResolver

    assert MediaResolver(base_location(base))("x/a.jpg") == expected


def test_a_local_base_file_stands_for_its_folder(tmp_path):
    from internvl_batch.api import base_location
    from internvl_batch.local_media import default_local_roots
    from internvl_batch.manifest.rows import MediaResolver

    (tmp_path / "rows.parquet").write_bytes(b"")
    assert MediaResolver(base_location(str(tmp_path / "rows.parquet")))("a.jpg") == str(tmp_path / "a.jpg")
    media = tmp_path / "media"
    assert default_local_roots([base_location(f"{media}/")], local_run=False) == [str(media)]


def test_rows_without_ids_are_named_after_what_they_are(tiny_checkpoint):
    from internvl_batch.config import TaskConfig
    from internvl_batch.pipeline.api_rows import rows_to_requests, with_ids

    photo, other = b"\xff\xd8\xff photo one", b"\xff\xd8\xff photo two"
    batch = pa.table(
        {
            "id": pa.array(["given", None, None, None], pa.string()),
            "image": pa.array([photo, photo, other, photo], pa.binary()),
            "label": ["a", "b", "c", "b"],
        }
    )
    ids = with_ids(batch).column("id").to_pylist()
    assert ids[0] == "given" and all(i.startswith("row:") and len(i) == 20 for i in ids[1:])
    assert ids[1] != ids[2] and ids[1] == ids[3]  # the same row, the same id; another row, another
    assert with_ids(batch.slice(1, 1)).column("id").to_pylist() == [ids[1]]  # wherever it is
    no_column = with_ids(batch.drop_columns(["id"])).column("id").to_pylist()
    assert no_column[1:] == ids[1:] and no_column[0].startswith("row:")
    numbers = with_ids(pa.table({"id": pa.array([7, None], pa.int64()), "image": ["a.jpg", "b.jpg"]}))
    assert numbers.column("id").to_pylist()[0] == "7"  # as the manifest reader makes an integer id
    requests = rows_to_requests(batch, TaskConfig(), 8, None)
    assert requests.column("id").to_pylist() == ids
    assert requests.column("media").to_pylist() == [["given#1"]] + [[f"{i}#1"] for i in ids[1:]]  # not None#1


def test_the_progress_line_comes_every_interval_while_nothing_arrives(caplog):
    from internvl_batch.summary import RunStats

    stats = RunStats(results_to_do=5, progress_every_s=0.2)
    with caplog.at_level(logging.INFO, logger="internvl_batch.progress"), stats.ticking():
        time.sleep(0.9)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress: 0/5 results written")]
    assert 3 <= len(lines) <= 5


def test_ray_datas_console_keeps_only_warnings_unless_verbose():
    from ray.data import DataContext

    from internvl_batch.pipeline.console import quiet_ray_data

    console = [h for h in logging.getLogger("ray.data").handlers if h.get_name() == "console"]
    assert console, "Ray Data's default logging config has a console handler"

    def shown(level, message):
        return console[0].filter(logging.LogRecord("ray.data.x", level, __file__, 1, message, None, None))

    context = DataContext.get_current()
    saved = (context.enable_progress_bars, context.enable_operator_progress_bars, list(console[0].filters))
    try:
        # Ray Data's defaults, whatever a job run earlier in this process set (the context is per process).
        context.enable_progress_bars = True
        console[0].filters[:] = [f for f in console[0].filters if type(f).__name__ != "_QuietConsole"]
        quiet_ray_data(verbose=True)
        assert context.enable_progress_bars and shown(logging.INFO, "Execution plan of Dataset ...")
        quiet_ray_data(verbose=False)
        assert not context.enable_progress_bars and not context.enable_operator_progress_bars
        assert not shown(logging.INFO, "Total Progress: 0/?") and not shown(logging.INFO, "Execution plan ...")
        assert not shown(logging.WARNING, "Progress bars disabled. To enable, set ...")
        assert shown(logging.WARNING, "Ray's object store is configured to use only 29.6% of available memory")
    finally:
        context.enable_progress_bars, context.enable_operator_progress_bars, console[0].filters[:] = saved
