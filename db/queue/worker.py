"""What a claimer does: claim, heartbeat (extend_leases), complete, fail, give back, recover.

Leases: a claim is identified by (item id, owner, attempt). ``attempts`` grows by one at every
claim, so it doubles as a fencing token: once a lease has expired and the item was claimed again,
the old holder's heartbeat, completion or failure matches no row and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence

import psycopg
from psycopg.rows import class_row, tuple_row
from psycopg.types.json import Jsonb

from db.queue.execute import fetch_tuples, notify_if
from db.queue.statements import (
    CLAIMS,
    COMPLETE,
    COMPLETE_AND_CLAIMS,
    EXTEND,
    FAIL,
    GIVE_BACK,
    RECOVER,
    ModelScope,
)
from db.queue.types import ClaimedItem, FailOutcome, Lease, LeaseReport, RecoveredLease


ModelFilter = str | Sequence[str] | None


def _model_filter(model_id: ModelFilter) -> tuple[ModelScope, dict]:
    """Which claim a model filter asks for ("one", "several" or "any") and its parameters: a
    list of one model is claimed as that model, on the claim index's fast path."""
    if model_id is not None and not isinstance(model_id, str):
        models = list(dict.fromkeys(model_id))
        if not models:
            raise ValueError("claim for at least one model, or None for any")
        if len(models) > 1:
            return "several", {"model_id": None, "model_ids": models}
        model_id = models[0]
    return ("any" if model_id is None else "one"), {"model_id": model_id, "model_ids": None}


def claim_batch(
    conn: psycopg.Connection,
    n: int,
    owner: str,
    lease_seconds: float,
    *,
    model_id: ModelFilter = None,
) -> list[ClaimedItem]:
    """Lease up to ``n`` claimable items to ``owner``, most urgent first; ``model_id``: one
    model's, several models' (a list), or any model's (None)."""
    if n <= 0:
        return []
    which, models = _model_filter(model_id)
    params = {"n": n, "owner": owner, "lease_seconds": lease_seconds, **models}
    query = CLAIMS[which]
    with conn.cursor(row_factory=class_row(ClaimedItem)) as cur:
        items = cur.execute(query, params).fetchall()
    return _in_claim_order(items)


def _in_claim_order(items: list[ClaimedItem]) -> list[ClaimedItem]:
    """UPDATE ... RETURNING does not keep the order the claim picked them in."""
    items.sort(key=lambda i: (i.priority, i.queued_at, i.id))
    return items


def _lease_arrays(leases: Iterable[Lease]) -> dict[str, list]:
    leases = list(leases)
    owners = {lease.owner for lease in leases}
    if len(owners) > 1:
        raise ValueError("leases of one call must share an owner")
    return {
        "ids": [lease.item_id for lease in leases],
        "attempts": [lease.attempt for lease in leases],
        "owner": owners.pop() if owners else "",
    }


def extend_leases(
    conn: psycopg.Connection, leases: Sequence[Lease], lease_seconds: float
) -> LeaseReport:
    """Heartbeat: extend held leases; honour cancel requests; report leases no longer held."""
    if not leases:
        return LeaseReport()
    rows = fetch_tuples(conn, EXTEND, {**_lease_arrays(leases), "lease_seconds": lease_seconds})
    outcome = dict(rows)
    return LeaseReport(
        extended=[i for i, s in outcome.items() if s == "processing"],
        cancelled=[i for i, s in outcome.items() if s == "cancelled"],
        lost=[lease.item_id for lease in leases if lease.item_id not in outcome],
    )


# What a completer stored for an item, as its item.completed event tells it: one
# {"format", "width", "height"} per output.
Outputs = Mapping[uuid.UUID, Sequence[Mapping[str, object]]]


def _completion_arrays(leases: Sequence[Lease], outputs: Outputs | None) -> dict[str, list]:
    outputs = outputs or {}
    return {**_lease_arrays(leases),
            "outputs": [Jsonb(list(outputs.get(lease.item_id, ()))) for lease in leases]}


def complete_many(
    conn: psycopg.Connection, leases: Sequence[Lease], outputs: Outputs | None = None
) -> set[uuid.UUID]:
    """Complete items in one statement, each with its item.completed event (naming its
    ``outputs``); returns the ids whose lease was still held.

    An id missing from the result belonged to a zombie: its lease expired and the item was
    recovered or claimed again, so this completion must not count.
    """
    if not leases:
        return set()
    return {row[0] for row in fetch_tuples(conn, COMPLETE, _completion_arrays(leases, outputs))}


def complete_and_claim(
    conn: psycopg.Connection,
    leases: Sequence[Lease],
    n: int,
    owner: str,
    lease_seconds: float,
    *,
    model_id: ModelFilter = None,
    outputs: Outputs | None = None,
) -> tuple[set[uuid.UUID], list[ClaimedItem]]:
    """``complete_many(leases)`` and ``claim_batch(n, owner, ...)`` in one statement, for a
    claimer that claims again for the slots its finished items free (the scheduler does).

    One statement is one round trip and, outside a transaction, one commit: a claimer that
    completes and claims separately waits for two WAL flushes a cycle, and at batch 100 the
    flushes were about 40% of the claimers' time in the server (queue_bench). ``leases`` must be
    ``owner``'s.
    """
    if any(lease.owner != owner for lease in leases):
        raise ValueError("the leases completed must be the claiming owner's")
    which, models = _model_filter(model_id)
    params = {**_completion_arrays(leases, outputs), "n": max(n, 0), "owner": owner,
              "lease_seconds": lease_seconds, **models}
    query = COMPLETE_AND_CLAIMS[which]
    done: set[uuid.UUID] = set()
    items: list[ClaimedItem] = []
    # Positional: a row is (completed, *ClaimedItem's fields in order), as the query says.
    with conn.cursor(row_factory=tuple_row) as cur:
        for completed, *item in cur.execute(query, params):
            if completed is not None:
                done.add(completed)
            else:
                items.append(ClaimedItem(*item))
    return done, _in_claim_order(items)


def complete(conn: psycopg.Connection, lease: Lease, outputs: Outputs | None = None) -> bool:
    return lease.item_id in complete_many(conn, [lease], outputs)


def give_back(conn: psycopg.Connection, leases: Sequence[Lease], reason: str) -> int:
    """Return leased items to the queue without spending an attempt: the work never ran
    (the depth service was down, the scheduler is stopping). Fenced like completion."""
    if not leases:
        return 0
    params = {**_lease_arrays(leases), "reason": reason[:4000]}
    return notify_if(conn, len(fetch_tuples(conn, GIVE_BACK, params)))


def fail(
    conn: psycopg.Connection,
    lease: Lease,
    error: str,
    *,
    retryable: bool = True,
    backoff_base: float = 2.0,
    backoff_max: float = 300.0,
) -> FailOutcome | None:
    """Record a failed attempt: back to the queue after a backoff while attempts remain and the
    error is retryable, else failed for good. None when the lease was no longer held."""
    params = {
        **_lease_arrays([lease]),
        "error": error or "unknown error",
        "retryable": retryable,
        "backoff_base": backoff_base,
        "backoff_max": backoff_max,
    }
    rows = fetch_tuples(conn, FAIL, params)
    return FailOutcome(*rows[0]) if rows else None


def recover_expired_leases(conn: psycopg.Connection, limit: int = 10_000) -> list[RecoveredLease]:
    """Return items whose holder stopped heartbeating to the queue (or fail them when their
    attempts are spent). The attempt was already counted at claim time."""
    recovered = [RecoveredLease(*row) for row in fetch_tuples(conn, RECOVER, {"limit": limit})]
    notify_if(conn, sum(r.status == "queued" for r in recovered))
    return recovered
