"""glibc malloc settings for the processes that pass images and tensors of several MB around:
depth replicas, processing workers and the bulk job's workers. Read by glibc when a process
starts, so they travel in the runtime_env that starts those workers."""

from __future__ import annotations

# glibc serves a block above its mmap threshold with mmap and unmaps it on free, but each such
# free raises the threshold (up to 32 MiB); from then on multi-MB arrays come from the heap arenas
# (one per thread that allocated), which fragment and seldom give memory back. The tiny model
# predicting batches of 1-12 photos grew 422 -> 1,153 MB over 1,000 images, still growing, with
# the defaults; with one arena and the threshold fixed at 4 MiB it stayed at 603-631 MB over
# 1,200 (a fixed threshold also stops the rise). At 1 MiB memory was flatter still (553-564 MB)
# but every tensor became an mmap, and the same images took up to 45% longer.
ARRAYS_MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(4 * 2**20)}
