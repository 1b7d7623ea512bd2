"""Background depth work drops to the lowest CPU priority; whoever calls it, only that process."""

from __future__ import annotations

import multiprocessing as mp
import os

from cluster.cpu_priority import BACKGROUND_NICENESS, yield_cpu_to_foreground


def _niceness_after_yield(results) -> None:
    yield_cpu_to_foreground()
    yield_cpu_to_foreground()  # a reused Ray worker calls it again: no error, no change
    results.put(os.getpriority(os.PRIO_PROCESS, 0))


def test_yield_lowers_only_the_calling_process():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_niceness_after_yield, args=(results,))
    child.start()
    assert results.get(timeout=60) == BACKGROUND_NICENESS
    child.join()
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
