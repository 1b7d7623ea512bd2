"""The scheduler's decisions, apart from the Ray actor that acts on them (no Ray here): what each
finished item asks of the queue, how many items to claim, and whether the services items need
are there to take work. Plain functions and records, tested without a cluster."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from cluster.work.processing import Outcome

# An item given back this many times in a row while its services looked healthy is retried like
# any failure (spending attempts), so no single item can bounce between queue and worker forever.
MAX_GIVE_BACKS = 5

# How often a dependency is probed: healthy, confirm every 10 s; down, every 2 s so work resumes
# promptly.
CHECK_HEALTHY_S = 10
CHECK_DOWN_S = 2


@dataclass
class Dependency:
    """A service items need (depth deployment, object store): while it is down, claim nothing."""

    ok: bool = False
    error: str | None = "not checked yet"
    checked: float = 0.0

    def due(self, now: float) -> bool:
        return now - self.checked >= (CHECK_HEALTHY_S if self.ok else CHECK_DOWN_S)

    def down(self, error: str) -> None:
        self.ok, self.error = False, error[:500]

    def up(self) -> None:
        self.ok, self.error = True, None


def healthy(deps: Mapping[str, Dependency]) -> bool:
    return all(d.ok for d in deps.values())


def due_dependencies(deps: Mapping[str, Dependency], now: float) -> list[str]:
    """The names of the dependencies to probe now (each marked checked at ``now``)."""
    due = [name for name, dep in deps.items() if dep.due(now)]
    for name in due:
        deps[name].checked = now
    return due


@dataclass
class SortedOutcomes:
    completed: list[Outcome] = field(default_factory=list)
    given_back: list[Outcome] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)  # to retry later, or finally failed


class GiveBacks:
    """How often in a row each item was given back; past MAX_GIVE_BACKS it is not any more."""

    def __init__(self, limit: int = MAX_GIVE_BACKS) -> None:
        self.limit = limit
        self.counts: dict[uuid.UUID, int] = {}

    def may_give_back(self, item_id: uuid.UUID) -> bool:
        self.counts[item_id] = self.counts.get(item_id, 0) + 1
        return self.counts[item_id] <= self.limit

    def forget(self, item_id: uuid.UUID) -> None:
        self.counts.pop(item_id, None)

    def __len__(self) -> int:
        return len(self.counts)


def sort_outcomes(
    batch: Iterable[Outcome], deps: Mapping[str, Dependency], give_backs: GiveBacks
) -> SortedOutcomes:
    """What each outcome asks of the queue. An item a down service sent back is given back
    without spending an attempt (and marks that service down), unless it has come back too
    often: then it is retried like any failure."""
    sorted_ = SortedOutcomes()
    for o in batch:
        if o.status == "unavailable":
            deps[o.dependency or "depth"].down(o.error or "unavailable")
            if give_backs.may_give_back(o.lease.item_id):
                sorted_.given_back.append(o)
                continue
            o = replace(o, status="retry")  # given back too often: now it costs an attempt
        give_backs.forget(o.lease.item_id)
        (sorted_.completed if o.status == "completed" else sorted_.failed).append(o)
    return sorted_


def free_slots(max_in_flight: int, in_flight: int, finished: int) -> int:
    """Slots free once the ``finished`` items (still counted in ``in_flight``) are recorded."""
    return max_in_flight - in_flight + finished


def wanted(free: int, *, paused: bool, deps: Mapping[str, Dependency]) -> int:
    """How many items to claim: the free slots, unless paused or a dependency is down."""
    return free if not paused and healthy(deps) and free > 0 else 0
