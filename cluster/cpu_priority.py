"""Background depth work yields the CPU to the API."""

from __future__ import annotations

import os

BACKGROUND_NICENESS = 19


def yield_cpu_to_foreground() -> None:
    """Lowest CPU priority for this process, which does background depth work. Where the gateway
    shares CPUs with it (a laptop, a small node), uploads and reads keep their latency while the
    queue is worked off with whatever CPU is left; with idle CPU it changes nothing."""
    if os.getpriority(os.PRIO_PROCESS, 0) < BACKGROUND_NICENESS:
        os.setpriority(os.PRIO_PROCESS, 0, BACKGROUND_NICENESS)
