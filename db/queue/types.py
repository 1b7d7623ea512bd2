"""The queue's row types: what its statements return, as frozen dataclasses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from db.vocabulary import STATUSES, Kind, Status


@dataclass(frozen=True)
class Lease:
    """Proof of a claim; completion, failure and heartbeats need it."""

    item_id: uuid.UUID
    owner: str
    attempt: int


@dataclass(frozen=True)
class ClaimedItem:
    """What a claimer needs to process an item, and the lease that proves the claim."""

    id: uuid.UUID
    media_id: uuid.UUID
    model_id: str
    kind: Kind
    bytes: int
    mime: str
    storage_key: str
    priority: int
    attempts: int
    max_attempts: int
    lease_owner: str
    lease_expires_at: datetime
    queued_at: datetime

    @property
    def lease(self) -> Lease:
        return Lease(self.id, self.lease_owner, self.attempts)


@dataclass(frozen=True)
class QueueItem:
    id: uuid.UUID
    media_id: uuid.UUID
    model_id: str
    kind: Kind
    bytes: int
    mime: str
    storage_key: str
    status: Status
    priority: int
    attempts: int
    max_attempts: int
    last_error: str | None
    error_count: int
    cancel_requested: bool
    lease_owner: str | None
    lease_expires_at: datetime | None
    run_after: datetime
    queued_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    processing_duration: float | None
    created: bool = False  # set by enqueue: False when an active item already existed

    @property
    def lease(self) -> Lease:
        if self.status != "processing" or self.lease_owner is None:
            raise ValueError(f"queue item {self.id} is {self.status}, not leased")
        return Lease(self.id, self.lease_owner, self.attempts)


@dataclass(frozen=True)
class FailOutcome:
    item_id: uuid.UUID
    status: Status  # queued (will be retried at run_after), failed or cancelled
    run_after: datetime


@dataclass(frozen=True)
class LeaseReport:
    """What a heartbeat found: leases extended, cancellations honoured, leases no longer held."""

    extended: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    lost: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class RecoveredLease:
    item_id: uuid.UUID
    owner: str
    status: Status  # queued again, or failed when its attempts are spent


@dataclass(frozen=True)
class QueueStats:
    counts: dict[Status, dict[Kind, int]]
    completed_last_minute: int
    completed_last_hour: int
    avg_processing_seconds: float | None

    def total(self, status: Status) -> int:
        return sum(self.counts[status].values())

    @property
    def waiting(self) -> int:
        return self.total("pending") + self.total("queued")

    @property
    def remaining(self) -> int:
        return self.waiting + self.total("processing")

    @property
    def throughput_per_minute(self) -> float:
        """Recent completions per minute: the last minute if busy, else the hour's average."""
        if self.completed_last_minute:
            return float(self.completed_last_minute)
        return self.completed_last_hour / 60.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds to drain what is left at the recent rate; None when nothing has completed."""
        if self.remaining == 0:
            return 0.0
        rate = self.throughput_per_minute
        return None if rate == 0 else self.remaining / rate * 60.0

    def status_counts(self) -> dict[str, int]:
        """The queue status shape ImmichVR's queue manager serves."""
        return {
            "waiting": self.waiting,
            "active": self.total("processing"),
            "completed": self.total("completed"),
            "failed": self.total("failed"),
            "cancelled": self.total("cancelled"),
            "total": sum(self.total(s) for s in STATUSES),
        }


@dataclass(frozen=True)
class SummaryRow:
    status: Status
    kind: Kind
    items: int
    avg_processing_seconds: float | None
    oldest_queued_at: datetime | None
    last_completed_at: datetime | None
    errors: int


@dataclass(frozen=True)
class Page:
    items: list[QueueItem]
    next_cursor: str | None
