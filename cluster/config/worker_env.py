"""The environment of depthmill's Ray workers: CPU priority (background depth work yields the CPU
to the API) and the allocator settings of the processes that pass images and tensors around."""

from __future__ import annotations

import os
from pathlib import Path

BACKGROUND_NICENESS = 19


def _starting_niceness(niceness: int) -> dict[str, str]:
    return {"RAY_worker_niceness": str(niceness)}


# Ray starts every worker at nice 15 (RAY_worker_niceness) so that its own daemons come first.
# Left so, the gateway, the Serve proxy and the scheduler run at 15, and depth work at 19 gets only
# 2.4 times less CPU than they do (scheduler weights 36 and 15); from 0 it is 68 times less. A
# worker reads this when it starts: in a node's environment it covers every worker of the node,
# the Serve proxy included; in an actor's runtime_env, that actor (as Ray's job manager does for
# job supervisors), so the foreground holds even on a cluster someone else started.
FOREGROUND_ENV = _starting_niceness(0)
FOREGROUND_RUNTIME_ENV = {"env_vars": FOREGROUND_ENV}
# Background work asks for its own workers at 19 from the start, so that their start-up (Python,
# Ray, torch and the model: seconds of CPU each time Ray starts a worker or Serve a replica) does
# not compete with uploads either; yield_cpu_to_foreground then covers any thread started before.
BACKGROUND_ENV = _starting_niceness(BACKGROUND_NICENESS)


def yield_cpu_to_foreground() -> None:
    """Lowest CPU priority for every thread of this process, which does background depth work.
    Where the gateway shares CPUs with it (a laptop, a small node), uploads and reads keep their
    latency while the queue is worked off with whatever CPU is left; with idle CPU it changes
    nothing. Threads started later inherit it from the thread that starts them."""
    for tid in _thread_ids():
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < BACKGROUND_NICENESS:
                os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICENESS)
        except ProcessLookupError:
            pass  # the thread ended meanwhile


def _thread_ids() -> list[int]:
    # On Linux the nice value belongs to a thread, not the process: Ray's gRPC and event-loop
    # threads, and the thread a task or replica runs on, each need lowering. Elsewhere PRIO_PROCESS
    # 0 is the whole process.
    tasks = Path("/proc/self/task")
    return [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]


# glibc malloc settings for the processes that pass images and tensors of several MB around:
# depth replicas, processing workers and the bulk job's workers. Read by glibc when a process
# starts, so they travel in the runtime_env that starts those workers.
# glibc serves a block above its mmap threshold with mmap and unmaps it on free, but each such
# free raises the threshold (up to 32 MiB); from then on multi-MB arrays come from the heap arenas
# (one per thread that allocated), which fragment and seldom give memory back: the tiny model
# predicting batches of 1-12 photos grew 422 -> 1,153 MB over 1,000 images with the defaults. One
# arena and a fixed threshold keep it flat. The threshold is glibc's own ceiling, 32 MiB: a lower
# one (4 MiB was tried) makes every mid-sized activation of a forward pass an mmap, page-faulted
# in and unmapped again, and the model's CPU per image rose by a third.
ARRAYS_MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}
