"""The words the database and the API share: item statuses, media kinds, priorities, page sizes.

One place for them; the schema's CHECK constraints (migration 001) and
``depthmill_default_priority`` spell the same values in SQL.
"""

from __future__ import annotations

from typing import Literal

Status = Literal["pending", "queued", "processing", "completed", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("pending", "queued", "processing", "completed", "failed", "cancelled")
# An item in one of these is live: at most one per media + model (processing_queue_media).
ACTIVE_STATUSES: tuple[Status, ...] = ("pending", "queued", "processing")
# An item in one of these is done with: nothing more happens to it unless asked (retry).
FINAL_STATUSES: tuple[Status, ...] = ("completed", "failed", "cancelled")

Kind = Literal["photo", "video"]
KINDS: tuple[Kind, ...] = ("photo", "video")


def check_kind(kind: str | None) -> None:
    """A filter's kind (None: any) is one of KINDS, or a ValueError says which are."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected {' or '.join(KINDS)}")


def check_status(status: str | None) -> None:
    """A filter's status (None: any) is one of STATUSES, or a ValueError says which are."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")

# Priorities, most urgent first (depthmill_default_priority in migration 001; docs/ARCHITECTURE.md):
# photos 1-100, videos 101-200, each band ordered by a size score: smaller files first, from the
# band's first value at 0 bytes to its last at SIZE_SCORE_BYTES and above. 0 is left for an
# explicit "process this now".
MIN_PRIORITY = 0
MAX_PRIORITY = 200
PHOTO_PRIORITIES = range(1, 101)
VIDEO_PRIORITIES = range(101, 201)
SIZE_SCORE_BYTES = 100_000_000


def default_priority(kind: Kind, nbytes: int) -> int:
    """What ``depthmill_default_priority`` gives an item of this kind and size."""
    band = PHOTO_PRIORITIES if kind == "photo" else VIDEO_PRIORITIES
    steps = len(band) - 1
    return band.start + min(nbytes * steps // SIZE_SCORE_BYTES, steps)


# Keyset pages of media and queue items.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
