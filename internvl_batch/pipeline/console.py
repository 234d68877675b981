"""What a run prints on the driver's console: our lines (progress, summary, errors), not Ray's internals.

Two sources of noise, both switched off by the job's driver (`job.main`) before any dataset is built:

- Ray Data's progress: bars on a terminal, and on anything else (a log file, `ray job submit`'s job log) a
  block of one line per operator every few seconds, plus its execution-plan and timing lines at INFO. Off
  unless the run is verbose (`--verbose`); they still go to Ray Data's own log file
  (`<session>/logs/ray-data/ray-data.log`). The job logs its own `progress:` line instead (`summary.py`).
- One error-level line from Ray's C++ core on every run: `core_worker.cc: Actor with class name:
  'MapWorker(...)' ... has constructor arguments in the object store and max_restarts > 0`. Ray Data itself
  triggers it: it `ray.put`s every actor pool's transformer and context and passes the references to the
  actors' constructors, and its actor pools restart actors (`max_restarts=-1`, which the job keeps). The
  line is logged once per process (`RAY_LOG_ONCE_PER_PROCESS`), so `absorb_actor_restart_warning` sets it off
  once with the process's stderr pointed at /dev/null, and Ray Data's actors do not print it again. The
  warning is about restarted actors losing constructor arguments that went out of scope; Ray Data holds its
  references for the whole execution (ray-project/ray#53727).
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("internvl_batch.pipeline")

PROGRESS_NOTICE = "Progress bars disabled"  # Ray Data's one-time notice that the bars are off


class _QuietConsole(logging.Filter):
    """Ray Data's console handler without its INFO lines (progress blocks, execution plans, timings) and
    without its notice that progress bars are off; warnings and errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not record.getMessage().startswith(PROGRESS_NOTICE)


def quiet_ray_data(verbose: bool) -> None:
    """Ray Data's progress bars and INFO console lines off in this process, unless `verbose`. Call before
    building datasets: each dataset copies the current `DataContext`."""
    if verbose:
        return
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console" and not any(isinstance(f, _QuietConsole) for f in handler.filters):
            handler.addFilter(_QuietConsole())


_absorbed = False


class _Nothing:
    def __init__(self, *args) -> None:  # never runs: the actor is never placed
        pass


def absorb_actor_restart_warning() -> None:
    """Set off Ray's once-per-process constructor-arguments warning with stderr muted (module docstring).

    The actor asks for a resource no node has, so no worker process starts for it, and it is killed at once.
    The warning is logged by the calling thread while the actor is created; stderr is muted for that call
    only (a few milliseconds: what other threads write then is lost, which is why it is done before the run
    starts its work)."""
    import ray

    global _absorbed
    if _absorbed:  # the warning is once per process: once set off, there is nothing more to absorb
        return
    _absorbed = True
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            try:
                cls = ray.remote(num_cpus=0, max_restarts=1, resources={"internvl_batch_never": 1})(_Nothing)
                actor = cls.remote(ray.put(None))
            finally:
                os.dup2(saved, 2)
        ray.kill(actor, no_restart=True)
    except Exception as exc:  # noqa: BLE001 - a muted warning is a nicety; the run goes on without it
        log.debug("could not absorb Ray's constructor-arguments warning: %s", exc)
    finally:
        os.close(saved)
