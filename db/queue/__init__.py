"""The processing queue: every statement that touches ``processing_queue`` lives in this package.

Shape borrowed from pgqueuer and River: claim and mark in one statement, fenced leases, batched
completion, partial indexes on the active states. Each function takes a connection and runs inside
the caller's transaction, so a caller can, say, record a depth map and complete its item atomically.

Completed items leave ``processing_queue`` in the statement that completes them, for
``processing_queue_completed`` (migration 006): the hot table holds what is live or may come back.
Reads go through the ``queue_items`` view, which is both.

- ``types``: the row types (dataclasses);
- ``statements``: the named SQL, with what each statement locks;
- ``worker``: claim, complete, fail, give back, extend leases, recover expired leases;
- ``admin``: enqueue, release, cancel, retry, list and get items, stats.

``from db import queue`` and ``queue.X`` reach all of them.
"""

from __future__ import annotations

from db.queue.admin import (
    cancel,
    close_failed_items,
    decode_cursor,
    encode_cursor,
    enqueue,
    enqueue_many,
    get_item,
    items_for_media,
    list_items,
    release,
    report_if_drained,
    retry,
    retry_all_failed,
    stats,
    summary,
)
from db.queue.execute import NOTIFY_CHANNEL
from db.queue.statements import build_claim_query, build_complete_and_claim_query
from db.queue.types import (
    ClaimedItem,
    FailOutcome,
    Lease,
    LeaseReport,
    Page,
    QueueItem,
    QueueStats,
    RecoveredLease,
    SummaryRow,
)
from db.queue.worker import (
    claim_batch,
    complete,
    complete_and_claim,
    complete_many,
    extend_leases,
    fail,
    give_back,
    recover_expired_leases,
)
from db.vocabulary import (
    ACTIVE_STATUSES,
    KINDS,
    MAX_PAGE_SIZE,
    MAX_PRIORITY,
    STATUSES,
    Kind,
    Status,
)

__all__ = [
    "ACTIVE_STATUSES", "KINDS", "MAX_PAGE_SIZE", "MAX_PRIORITY", "NOTIFY_CHANNEL", "STATUSES",
    "ClaimedItem", "FailOutcome", "Kind", "Lease", "LeaseReport", "Page", "QueueItem",
    "QueueStats", "RecoveredLease", "Status", "SummaryRow",
    "build_claim_query", "build_complete_and_claim_query", "cancel", "claim_batch",
    "close_failed_items", "complete", "complete_and_claim", "complete_many", "decode_cursor",
    "encode_cursor", "enqueue", "enqueue_many", "extend_leases", "fail", "get_item", "give_back",
    "items_for_media", "list_items", "recover_expired_leases", "release", "report_if_drained",
    "retry",
    "retry_all_failed", "stats", "summary",
]
