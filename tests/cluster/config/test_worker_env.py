"""Background depth work drops to the lowest CPU priority: every thread of the process that calls
it, threads it starts later too, and no other process."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading

import pytest

from cluster.config.worker_env import BACKGROUND_NICENESS, yield_cpu_to_foreground


def _thread_niceness() -> dict[int, int]:
    return {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}


def _niceness_after_yield(results) -> None:
    started = threading.Event()
    stop = threading.Event()
    # A thread that already runs, as Ray's gRPC and event-loop threads do when a task starts.
    earlier = threading.Thread(target=lambda: (started.set(), stop.wait()))
    earlier.start()
    started.wait()
    # Yield from a thread other than the main one, as a Serve replica's constructor does.
    yielding = threading.Thread(target=yield_cpu_to_foreground)
    yielding.start()
    yielding.join()
    yield_cpu_to_foreground()  # a reused Ray worker calls it again: no error, no change
    later = threading.Thread(target=stop.wait)
    later.start()
    niceness = _thread_niceness()
    stop.set()
    earlier.join()
    later.join()
    results.put(niceness)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_yield_lowers_every_thread_of_only_the_calling_process():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_niceness_after_yield, args=(results,))
    child.start()
    niceness = results.get(timeout=60)
    child.join()
    assert len(niceness) >= 3  # main, earlier, later
    assert set(niceness.values()) == {BACKGROUND_NICENESS}
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
