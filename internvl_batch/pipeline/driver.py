"""The job's driver process around a run: what Ctrl-C says, and how Ray is shut down at the end.

- Ctrl-C (SIGINT) ends the run with exit code 130 and one line (`interrupted_line`): result files are written
  atomically, one per batch, so every file written before the interrupt is complete and stays; a rerun with
  `output.resume` (the default) skips what they hold. From the interrupt on, the lines Ray forwards from its
  workers are no longer printed (`interruptible`): they would only be the workers' reports of being stopped.
- A driver that started Ray shuts it down itself before it returns (`shut_down_ray`), with Ctrl-C meaning
  "exit now" meanwhile. Left to Ray's own atexit hook, a Ctrl-C that lands in the hook interrupts the shutdown
  half-way, and the interpreter then exits with Ray's threads still running (a crash: exit code 139). The
  results are written by then; a local cluster's processes end with the driver (Ray's fate sharing).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading

from internvl_batch.redact import redact_text


def ray_running() -> bool:
    """Whether this process is connected to Ray now (without importing Ray when it is not)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def interrupted_line(config, rows: int | None) -> str:
    """The one line printed when a run is interrupted: what was kept and how to resume. `config`: the job's
    (None when it was interrupted before its config was read); `rows`: result rows counted before the
    interrupt (None when it came outside the pipeline)."""
    if config is None:
        return "internvl-batch: interrupted before the job started; nothing was written"
    counted = f" (at least {rows} rows)" if rows else ""  # files being written when it came are not counted
    kept = f"the result files written so far stay in {config.output.path}{counted}"
    if config.output.resume:
        how = "run the same command again to resume (what they hold is not done again)"
    else:
        how = (
            "this run had output.resume=false, so the same command starts over: to resume, run it with "
            "--set output.resume=true (and without --no-resume)"
        )
    return redact_text(f"internvl-batch: interrupted: {kept}; {how}")


def _mute_worker_logs() -> None:
    """Stop printing the log lines Ray forwards from workers to this driver (`ray.init(log_to_driver=True)`)."""
    try:
        from ray._private.worker import global_worker_stdstream_dispatcher

        global_worker_stdstream_dispatcher.remove_handler("ray_print_logs")
    except (ImportError, AttributeError):  # another Ray: its workers' last lines are printed, nothing worse
        pass


@contextlib.contextmanager
def interruptible():
    """Within: Ctrl-C raises KeyboardInterrupt as usual, first muting the workers' forwarded log lines (the
    signal handler runs before Ray Data's executor stops its actors, whose reports would follow ours).

    A KeyboardInterrupt raised where Python cannot propagate it (in a weakref callback or a `__del__`) would
    be printed as an "Exception ignored" traceback and lost; it is raised again in the main thread instead."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return

    def handler(signum, frame) -> None:
        _mute_worker_logs()
        raise KeyboardInterrupt

    def unraisable(report) -> None:
        if isinstance(report.exc_value, KeyboardInterrupt):  # deliver it again, from another thread, shortly
            threading.Timer(0.05, _thread.interrupt_main).start()
        else:
            previous_hook(report)

    previous, previous_hook = signal.signal(signal.SIGINT, handler), sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook


def _exit_now(code: int):
    def handler(signum, frame) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    return handler


def shut_down_ray(code: int) -> None:
    """Shut Ray down (this process started it); a Ctrl-C meanwhile exits at once with `code`."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    previous = signal.signal(signal.SIGINT, _exit_now(code)) if main_thread else None
    try:
        ray.shutdown()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
