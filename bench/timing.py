"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import time


def best_of(runs: int, work) -> float:
    """The shortest of `runs` wall-clock timings of `work()`, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)
