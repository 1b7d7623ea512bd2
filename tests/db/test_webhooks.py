"""Webhook endpoints and deliveries on real Postgres: fan-out, fenced claims one per endpoint and
oldest first, outcomes and the endpoint's health, paging, retry, test events and pruning."""

from __future__ import annotations

import uuid

import pytest

from db import events, webhooks
from db.errors import IllegalTransition, InvalidCursor, NotFound
from db.webhooks import Outcome

SECRET = "whsec_" + "A" * 32


def hook(conn, events_=("item.*",), url="https://example.com/hook") -> webhooks.Webhook:
    return webhooks.create(conn, url, list(events_), SECRET, "test")


def emit(conn, n=1, type_="item.completed") -> list[int]:
    return [events.emit(conn, type_, {"n": i}) for i in range(n)]


def age(conn, seconds: float) -> None:
    """Move every delivery and event ``seconds`` into the past."""
    conn.execute("UPDATE webhook_deliveries SET next_attempt_at = next_attempt_at - "
                 "make_interval(secs => %s), lease_expires_at = lease_expires_at - "
                 "make_interval(secs => %s)", [seconds, seconds])
    conn.execute("UPDATE event_batches SET created_at = created_at - make_interval(secs => %s)",
                 [seconds])


def test_create_get_update_delete_and_no_secret_in_reads(conn):
    w = hook(conn)
    assert not hasattr(w, "secret")
    assert webhooks.get(conn, w.id).events == ["item.*"]
    assert [x.id for x in webhooks.list_webhooks(conn)] == [w.id]
    w2 = webhooks.update(conn, w.id, events=["item.failed", "item.failed"], description=None,
                         enabled=False)
    assert w2.events == ["item.failed"] and w2.description is None and not w2.enabled
    assert w2.disabled_reason == "disabled by hand"
    w3 = webhooks.update(conn, w.id, enabled=True, url="https://example.org/x")
    assert w3.enabled and w3.disabled_reason is None and w3.url == "https://example.org/x"
    webhooks.rotate_secret(conn, w.id, "whsec_" + "B" * 32)
    assert conn.execute("SELECT secret FROM webhooks").fetchone()[0].startswith("whsec_B")
    webhooks.delete(conn, w.id)
    for call in (webhooks.get, webhooks.delete):
        with pytest.raises(NotFound):
            call(conn, w.id)
    with pytest.raises(ValueError, match="unknown event type"):
        hook(conn, ["item.exploded"])


def test_fan_out_claim_one_per_endpoint_oldest_first(conn):
    a, b = hook(conn), hook(conn, ["media.*"])
    emit(conn, 3)
    events.emit(conn, "media.created", {})
    claimed = webhooks.claim(conn, 10, "w1", 30)
    # One per endpoint, each endpoint's oldest.
    assert sorted(str(d.webhook_id) for d in claimed) == sorted([str(a.id), str(b.id)])
    first_a = next(d for d in claimed if d.webhook_id == a.id)
    assert first_a.event_data == {"n": 0} and first_a.attempt == 1 and first_a.secret == SECRET
    # Nothing more while each endpoint has one in flight.
    assert webhooks.claim(conn, 10, "w2", 30) == []
    assert webhooks.record(conn, first_a, Outcome("delivered", 200, "ok"), disable_after_s=60)
    (second,) = webhooks.claim(conn, 10, "w2", 30)
    assert second.webhook_id == a.id and second.event_data == {"n": 1}


def test_recording_passes_the_endpoints_slot_to_its_next_delivery(conn):
    a, _ = hook(conn), hook(conn)
    emit(conn, 2)
    first_a, first_b = sorted(webhooks.claim(conn, 10, "w1", 30), key=lambda d: d.webhook_id != a.id)
    recorded, following = webhooks.record_and_claim_next(
        conn, first_a, Outcome("delivered", 200), disable_after_s=60, lease_s=30)
    # The same endpoint's next event, leased to the same owner; b's slot is still b's own.
    assert recorded and following.webhook_id == a.id and following.event_data == {"n": 1}
    assert following.lease_owner == "w1" and following.attempt == 1
    assert webhooks.claim(conn, 10, "w2", 30) == []
    # Nothing more is due for a: the slot is free again, and a lost lease passes nothing on.
    assert webhooks.record_and_claim_next(conn, following, Outcome("delivered", 200),
                                          disable_after_s=60, lease_s=30) == (True, None)
    age(conn, 31)
    webhooks.claim(conn, 10, "w3", 30)  # b's expired lease goes to w3
    assert webhooks.record_and_claim_next(conn, first_b, Outcome("delivered", 200),
                                          disable_after_s=60, lease_s=30) == (False, None)


def test_a_retry_does_not_hold_later_deliveries_back(conn):
    w = hook(conn)
    emit(conn, 2)
    (first,) = webhooks.claim(conn, 5, "w", 30)
    webhooks.record(conn, first, Outcome("retry", 503, error="HTTP 503", retry_in_s=3600),
                    disable_after_s=1e6)
    (second,) = webhooks.claim(conn, 5, "w", 30)
    assert second.event_data == {"n": 1}
    assert webhooks.get(conn, w.id).failing_since is not None


def test_an_expired_lease_is_claimed_again_and_fences_the_old_holder(conn):
    hook(conn)
    emit(conn)
    (old,) = webhooks.claim(conn, 1, "dead", 30)
    assert webhooks.claim(conn, 1, "other", 30) == []
    age(conn, 31)
    (new,) = webhooks.claim(conn, 1, "other", 30)
    assert new.id == old.id and new.attempt == 2
    assert not webhooks.record(conn, old, Outcome("delivered", 200), disable_after_s=60)
    assert webhooks.extend_leases(conn, [old, new], 30) == {new.id}
    assert webhooks.record(conn, new, Outcome("delivered", 200), disable_after_s=60)


def test_failing_long_enough_disables_and_a_2xx_resets(conn):
    w = hook(conn)
    emit(conn, 3)
    (d,) = webhooks.claim(conn, 1, "w", 30)
    webhooks.record(conn, d, Outcome("retry", 500, retry_in_s=0), disable_after_s=100)
    (d,) = webhooks.claim(conn, 1, "w", 30)
    webhooks.record(conn, d, Outcome("delivered", 204), disable_after_s=100)
    assert webhooks.get(conn, w.id).failing_since is None
    (d,) = webhooks.claim(conn, 1, "w", 30)
    webhooks.record(conn, d, Outcome("retry", 500, retry_in_s=0), disable_after_s=100)
    conn.execute("UPDATE webhooks SET failing_since = now() - interval '101 seconds'")
    (d,) = webhooks.claim(conn, 1, "w", 30)
    webhooks.record(conn, d, Outcome("failed", 500), disable_after_s=100)
    got = webhooks.get(conn, w.id)
    assert not got.enabled and "every delivery failed since" in got.disabled_reason
    assert webhooks.claim(conn, 5, "w", 30) == []  # a disabled endpoint's deliveries wait


def test_gone_disables_at_once(conn):
    w = hook(conn)
    emit(conn)
    (d,) = webhooks.claim(conn, 1, "w", 30)
    webhooks.record(conn, d, Outcome("failed", 410, disable="the endpoint answered 410 Gone"),
                    disable_after_s=1e6)
    got = webhooks.get(conn, w.id)
    assert not got.enabled and got.disabled_reason == "the endpoint answered 410 Gone"


def test_deliveries_page_newest_first_and_retry(conn):
    w = hook(conn)
    emit(conn, 5)
    page = webhooks.list_deliveries(conn, w.id, limit=2)
    rest = webhooks.list_deliveries(conn, w.id, limit=10, cursor=page.next_cursor)
    ids = [d.id for d in page.items + rest.items]
    assert ids == sorted(ids, reverse=True) and len(ids) == 5 and rest.next_cursor is None
    assert page.items[0].event_type == "item.completed"
    with pytest.raises(InvalidCursor):
        webhooks.list_deliveries(conn, w.id, cursor="nope")
    with pytest.raises(NotFound):
        webhooks.list_deliveries(conn, uuid.uuid4())
    (d,) = webhooks.claim(conn, 1, "w", 30)
    with pytest.raises(IllegalTransition):
        webhooks.retry(conn, w.id, d.id)
    webhooks.record(conn, d, Outcome("failed", 400), disable_after_s=1e6)
    again = webhooks.retry(conn, w.id, d.id)
    assert again.status == "pending" and again.attempts == 0
    (d,) = webhooks.claim(conn, 1, "dead", 30)
    age(conn, 31)  # its holder died: retrying it by hand is allowed
    assert webhooks.retry(conn, w.id, d.id).status == "pending"
    assert [x.status for x in webhooks.list_deliveries(conn, w.id, status="pending").items]


def test_test_event_goes_to_one_endpoint_only(conn):
    a, b = hook(conn, ["*"]), hook(conn, ["*"])
    d = webhooks.send_test(conn, a.id)
    assert d.event_type == "webhook.test" and d.webhook_id == a.id
    assert webhooks.list_deliveries(conn, b.id).items == []


def test_pruning_keeps_undelivered_and_recent_events(conn):
    hook(conn)
    old_delivered, old_pending = emit(conn, 2)
    age(conn, 100)
    (d,) = webhooks.claim(conn, 1, "w", 30)
    webhooks.record(conn, d, Outcome("delivered", 200), disable_after_s=60)
    recent = emit(conn)[0]
    assert webhooks.prune_events(conn, 50) == 1
    left = {r[0] for r in conn.execute("SELECT id FROM events")}
    assert left == {old_pending, recent} and old_delivered not in left


def test_the_pool_row_factory_works_too(db):
    w = db.run(hook)
    db.run(emit)
    assert db.run(webhooks.send_test, w.id).status == "pending"
    assert len(db.run(webhooks.claim, 5, "w", 30)) == 1
    assert db.run(webhooks.due_at) is not None
    assert db.run(webhooks.prune_events, 1e6) == 0


def test_events_reads_work_on_the_pool_too(db):
    first = db.run(events.emit, "item.completed", {})
    db.run(events.emit, "item.failed", {})
    assert db.run(events.latest) is not None
    assert [e.type for e in db.run(events.read_after, first)] == ["item.failed"]


def test_due_at_leaves_out_what_waits_behind_a_delivery_in_flight(conn):
    hook(conn)
    emit(conn, 2)
    (d,) = webhooks.claim(conn, 5, "w", 30)
    due = webhooks.due_at(conn)
    lease = conn.execute("SELECT lease_expires_at FROM webhook_deliveries WHERE id = %s",
                         [d.id]).fetchone()[0]
    assert due == lease  # not the pending one behind it, which is due already


def test_each_event_of_a_batch_is_delivered_as_itself(conn):
    from db import queue
    from devkit.factories import bulk_media

    queue.enqueue_many(conn, bulk_media(conn, 3), "tiny")
    start = events.latest(conn)
    hook(conn, ["item.started"])
    queue.claim_batch(conn, 3, "w", 60, model_id="tiny")  # one statement, one outbox batch
    written = events.read_after(conn, start)
    got = []
    while claimed := webhooks.claim(conn, 1, "d", 30):
        (d,) = claimed
        got.append((d.event_id, d.event_type, d.event_data))
        webhooks.record(conn, d, Outcome("delivered", 200), disable_after_s=60)
    assert got == [(e.id, e.type, e.data) for e in written]
    assert [t for _, t, _ in got] == ["item.started"] * 3
    # Pruning takes the batch with its finished deliveries, and only once none is open.
    age(conn, 100)
    assert webhooks.prune_events(conn, 50) == 9  # media.created, item.queued, item.started: 3 each
    assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone()[0] == 0
