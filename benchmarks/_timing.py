"""Timing shared by the benchmark scripts."""

import time


def run_timed(fn, repeat, warmup=1):
    """Wall and process-CPU seconds of ``repeat`` calls of ``fn()`` after ``warmup`` calls.

    Returns two lists (wall, cpu), one entry per call. CPU time (all threads of this process) is
    less disturbed by other processes on a shared machine than wall time."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus
