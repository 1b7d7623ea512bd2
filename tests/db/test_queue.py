"""Queue semantics on real Postgres: priority, leases, fencing, backoff, transitions."""

from __future__ import annotations

import random
import threading
import time
import uuid

import psycopg
import pytest

from db import queue
from db.queue import statements
from db.errors import IllegalTransition, InvalidCursor, NotFound
from devkit.factories import insert_media

MODEL = "tiny"


def enqueue_new(conn: psycopg.Connection, kind="photo", nbytes=1_000_000, **kw) -> queue.QueueItem:
    return queue.enqueue(conn, insert_media(conn, kind, nbytes).id, MODEL, **kw)


def expire_leases(conn: psycopg.Connection) -> None:
    conn.execute(
        "UPDATE processing_queue SET lease_expires_at = now() - interval '1 second' "
        "WHERE status = 'processing'"
    )


def make_claimable(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE processing_queue SET run_after = now() WHERE status = 'queued'")


# ---------------------------------------------------------------------------------------------
# priority


@pytest.mark.parametrize(
    ("kind", "nbytes", "expected"),
    [
        ("photo", 0, 1),
        ("photo", 1_010_101, 1),  # just under one step of 100MB/99
        ("photo", 1_010_102, 2),
        ("photo", 50_000_000, 50),
        ("photo", 100_000_000, 100),
        ("photo", 10**12, 100),
        ("video", 0, 101),
        ("video", 100_000_000, 200),
        ("video", 10**12, 200),
    ],
)
def test_default_priority_bands(conn, kind, nbytes, expected):
    assert enqueue_new(conn, kind, nbytes).priority == expected


def test_claim_order_photos_before_videos_smaller_first_override_first(conn):
    big_photo = enqueue_new(conn, "photo", 90_000_000)
    small_video = enqueue_new(conn, "video", 1_000)
    small_photo = enqueue_new(conn, "photo", 1_000)
    mid_photo = enqueue_new(conn, "photo", 40_000_000)
    urgent_video = enqueue_new(conn, "video", 99_000_000, priority=0)

    claimed = [queue.claim_batch(conn, 1, "w", 60)[0].id for _ in range(5)]

    assert claimed == [urgent_video.id, small_photo.id, mid_photo.id, big_photo.id, small_video.id]
    assert queue.claim_batch(conn, 1, "w", 60) == []


def test_equal_priority_is_fifo(conn):
    first = enqueue_new(conn, nbytes=10)
    second = enqueue_new(conn, nbytes=10)
    batch = queue.claim_batch(conn, 2, "w", 60)
    assert [i.id for i in batch] == [first.id, second.id]


def test_priority_out_of_range_is_rejected(conn):
    media_id = insert_media(conn).id
    for bad in (-1, 201):
        with pytest.raises(ValueError, match="priority must be between 0 and 200"):
            queue.enqueue(conn, media_id, MODEL, priority=bad)


# ---------------------------------------------------------------------------------------------
# enqueue


def test_ids_are_time_ordered(conn):
    """UUID v7: later rows sort after earlier ones, so a claim in queued order touches index
    pages side by side (bench/queue_bench.py)."""
    made = []
    for _ in range(3):
        media_id = insert_media(conn).id
        made.append((media_id, queue.enqueue(conn, media_id, MODEL).id))
        time.sleep(0.002)  # the time part counts milliseconds
    for ids in zip(*made):
        assert all(i.version == 7 for i in ids)
        assert list(ids) == sorted(ids)
        # The time part is this clock's milliseconds.
        assert abs(int.from_bytes(ids[0].bytes[:6], "big") / 1000 - time.time()) < 60


def test_enqueue_twice_returns_the_active_item(conn):
    media_id = insert_media(conn).id
    first = queue.enqueue(conn, media_id, MODEL)
    again = queue.enqueue(conn, media_id, MODEL)
    assert first.created and not again.created
    assert again.id == first.id
    assert conn.execute("SELECT count(*) FROM processing_queue").fetchone()[0] == 1


def test_enqueue_again_with_priority_moves_it_forward_never_back(conn):
    media_id = insert_media(conn, nbytes=50_000_000).id
    item = queue.enqueue(conn, media_id, MODEL)
    assert item.priority == 50
    assert queue.enqueue(conn, media_id, MODEL, priority=0).priority == 0
    assert queue.enqueue(conn, media_id, MODEL, priority=150).priority == 0


def test_enqueue_other_model_is_a_separate_item(conn):
    media_id = insert_media(conn).id
    a = queue.enqueue(conn, media_id, "tiny")
    b = queue.enqueue(conn, media_id, "depth-anything/Depth-Anything-V2-Small-hf")
    assert a.id != b.id


def test_enqueue_after_completion_creates_a_new_item(conn):
    item = enqueue_new(conn)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    assert queue.complete(conn, claimed.lease)
    again = queue.enqueue(conn, item.media_id, MODEL)
    assert again.created and again.id != item.id


def test_enqueue_unknown_media_is_not_found(conn):
    with pytest.raises(NotFound):
        queue.enqueue(conn, uuid.uuid4(), MODEL)


def test_held_items_are_not_claimed_until_released(conn):
    item = enqueue_new(conn, hold=True)
    assert item.status == "pending"
    assert queue.claim_batch(conn, 10, "w", 60) == []
    assert queue.release(conn, [item.id]) == 1
    assert [i.id for i in queue.claim_batch(conn, 10, "w", 60)] == [item.id]


def test_enqueue_notifies_listeners(database_url, conn):
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN depthmill_queue")
        enqueue_new(conn)
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notes] == ["depthmill_queue"]


def test_claiming_does_not_notify(database_url, conn):
    enqueue_new(conn)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN depthmill_queue")
        queue.claim_batch(conn, 1, "w", 60)
        assert list(listener.notifies(timeout=0.5)) == []


def test_requeues_notify_listeners(database_url, conn):
    item = enqueue_new(conn)
    claimed = queue.claim_batch(conn, 1, "w", 0.01)
    time.sleep(0.05)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN depthmill_queue")
        assert [r.status for r in queue.recover_expired_leases(conn)] == ["queued"]
        assert len(list(listener.notifies(timeout=5, stop_after=1))) == 1
        queue.cancel(conn, item.id)
        assert list(listener.notifies(timeout=0.3)) == []
        queue.retry(conn, item.id)
        assert len(list(listener.notifies(timeout=5, stop_after=1))) == 1
    assert claimed[0].id == item.id


# ---------------------------------------------------------------------------------------------
# claim and leases


def test_claim_leases_and_counts_the_attempt(conn):
    enqueue_new(conn)
    (item,) = queue.claim_batch(conn, 5, "worker-1", 30)
    assert item.attempts == 1
    assert item.lease == queue.Lease(item.id, "worker-1", 1)
    stored = queue.get_item(conn, item.id)
    assert stored.status == "processing" and stored.lease_owner == "worker-1"
    assert stored.started_at is not None
    assert 25 < (stored.lease_expires_at - stored.started_at).total_seconds() < 35


def test_claim_for_a_model_takes_only_that_models_items(conn):
    media_id = insert_media(conn).id
    queue.enqueue(conn, media_id, "a")
    b = queue.enqueue(conn, media_id, "b")
    assert [i.id for i in queue.claim_batch(conn, 5, "w", 60, model_id="b")] == [b.id]


def test_a_claim_for_several_models_takes_theirs_in_claim_order_and_no_others(conn):
    media_id = insert_media(conn).id
    a = queue.enqueue(conn, media_id, "a", priority=5)
    queue.enqueue(conn, media_id, "other")
    c = queue.enqueue(conn, media_id, "c", priority=1)
    done, items = queue.complete_and_claim(conn, [], 5, "w", 60, model_id=["a", "c"])
    assert (done, [i.id for i in items]) == (set(), [c.id, a.id])
    assert queue.claim_batch(conn, 5, "w", 60, model_id=["a", "c"]) == []
    with pytest.raises(ValueError, match="at least one model"):
        queue.claim_batch(conn, 5, "w", 60, model_id=[])


def test_lease_expiry_returns_the_item_and_counts_the_attempt(conn):
    item = enqueue_new(conn)
    queue.claim_batch(conn, 1, "dead-worker", 60)
    assert queue.recover_expired_leases(conn) == []  # not expired yet

    expire_leases(conn)
    (recovered,) = queue.recover_expired_leases(conn)
    assert recovered == queue.RecoveredLease(item.id, "dead-worker", "queued")
    after = queue.get_item(conn, item.id)
    assert after.status == "queued" and after.attempts == 1
    assert "lease of dead-worker expired during attempt 1 of 3" in after.last_error

    (again,) = queue.claim_batch(conn, 1, "live-worker", 60)
    assert again.attempts == 2


def test_crash_loop_ends_in_failed(conn):
    item = enqueue_new(conn)
    for _ in range(3):
        assert queue.claim_batch(conn, 1, "w", 60)
        expire_leases(conn)
        queue.recover_expired_leases(conn)
    final = queue.get_item(conn, item.id)
    assert final.status == "failed" and final.attempts == 3
    assert "expired during attempt 3 of 3" in final.last_error
    assert queue.claim_batch(conn, 1, "w", 60) == []


def test_zombie_completion_is_rejected(conn):
    item = enqueue_new(conn)
    (zombie,) = queue.claim_batch(conn, 1, "zombie", 60)
    expire_leases(conn)
    queue.recover_expired_leases(conn)
    (live,) = queue.claim_batch(conn, 1, "live", 60)

    assert not queue.complete(conn, zombie.lease)
    assert queue.fail(conn, zombie.lease, "late error") is None
    assert queue.extend_leases(conn, [zombie.lease], 60).lost == [item.id]
    assert queue.get_item(conn, item.id).status == "processing"

    assert queue.complete(conn, live.lease)
    done = queue.get_item(conn, item.id)
    assert done.status == "completed" and done.lease_owner is None
    assert done.processing_duration is not None and done.processing_duration >= 0


def test_same_owner_reclaiming_is_fenced_by_attempt(conn):
    enqueue_new(conn)
    (first,) = queue.claim_batch(conn, 1, "w", 60)
    expire_leases(conn)
    queue.recover_expired_leases(conn)
    (second,) = queue.claim_batch(conn, 1, "w", 60)
    assert not queue.complete(conn, first.lease)
    assert queue.complete(conn, second.lease)


def test_heartbeat_extends_the_lease(conn):
    enqueue_new(conn)
    (item,) = queue.claim_batch(conn, 1, "w", 1)
    report = queue.extend_leases(conn, [item.lease], 120)
    assert report.extended == [item.id] and not report.lost and not report.cancelled
    expires = queue.get_item(conn, item.id).lease_expires_at
    assert (expires - item.lease_expires_at).total_seconds() > 100


def test_completion_is_rejected_after_recovery_even_before_a_reclaim(conn):
    enqueue_new(conn)
    (item,) = queue.claim_batch(conn, 1, "w", 60)
    expire_leases(conn)
    queue.recover_expired_leases(conn)
    assert not queue.complete(conn, item.lease)


def test_complete_many_in_one_statement(conn):
    for _ in range(20):
        enqueue_new(conn)
    batch = queue.claim_batch(conn, 20, "w", 60)
    done = queue.complete_many(conn, [i.lease for i in batch])
    assert done == {i.id for i in batch}
    assert queue.stats(conn).total("completed") == 20


def test_complete_and_claim_completes_held_leases_and_claims_the_next_in_order(conn):
    videos = [enqueue_new(conn, kind="video") for _ in range(3)]
    photos = [enqueue_new(conn, nbytes=n) for n in (3_000_000, 1_000_000, 2_000_000)]
    done, first = queue.complete_and_claim(conn, [], 2, "w", 60, model_id="tiny")
    assert done == set() and [i.id for i in first] == [photos[1].id, photos[2].id]

    done, second = queue.complete_and_claim(conn, [i.lease for i in first], 10, "w", 60)
    assert done == {i.id for i in first}
    assert [i.id for i in second] == [photos[0].id] + [v.id for v in videos]
    assert all(queue.get_item(conn, i.id).status == "completed" for i in first)
    assert all(queue.get_item(conn, i.id).status == "processing" for i in second)

    # Claiming nothing still completes; a lease no longer held is fenced off, as in complete_many.
    stale, *held = [i.lease for i in second]
    conn.execute("UPDATE processing_queue SET lease_expires_at = now() - interval '1 second' "
                 "WHERE id = %s", [stale.item_id])
    assert [r.item_id for r in queue.recover_expired_leases(conn)] == [stale.item_id]
    done, none = queue.complete_and_claim(conn, [*held, stale], 0, "w", 60, model_id="tiny")
    assert done == {lease.item_id for lease in held} and none == []
    assert queue.get_item(conn, stale.item_id).status == "queued"


def test_complete_and_claim_completes_only_the_claimers_own_leases(conn):
    enqueue_new(conn)
    (item,) = queue.claim_batch(conn, 1, "someone-else", 60)
    with pytest.raises(ValueError, match="owner"):
        queue.complete_and_claim(conn, [item.lease], 1, "w", 60)


def test_completed_items_leave_the_hot_table_and_stay_readable(conn):
    item = enqueue_new(conn)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    assert queue.complete(conn, claimed.lease)
    hot = conn.execute("SELECT count(*) FROM processing_queue").fetchone()[0]
    archived = conn.execute("SELECT count(*) FROM processing_queue_completed").fetchone()[0]
    assert (hot, archived) == (0, 1)
    detail = queue.get_item(conn, item.id)
    assert detail.status == "completed" and detail.lease_owner is None
    assert detail.completed_at is not None and detail.processing_duration >= 0
    assert [i.id for i in queue.items_for_media(conn, item.media_id)] == [item.id]
    assert [i.id for i in queue.list_items(conn, statuses=["completed"]).items] == [item.id]
    # Completed is terminal, wherever it lives.
    with pytest.raises(IllegalTransition):
        queue.cancel(conn, item.id)
    with pytest.raises(IllegalTransition):
        queue.retry(conn, item.id)


def test_both_queue_tables_have_the_columns_the_move_copies(conn):
    for table in ("processing_queue", "processing_queue_completed"):
        columns = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", [table]
        ).fetchall()
        assert tuple(c for (c,) in columns) == statements.TABLE_COLUMNS, table


def test_an_item_completed_after_a_cancel_request_keeps_the_request(conn):
    item = enqueue_new(conn)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    queue.cancel(conn, item.id)
    assert queue.complete(conn, claimed.lease)
    detail = queue.get_item(conn, item.id)
    assert detail.status == "completed" and detail.cancel_requested


def test_the_hot_table_refuses_a_completed_row(conn):
    enqueue_new(conn)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE processing_queue SET status = 'completed'")


def test_close_failed_items_completes_failed_and_cancelled_only(conn):
    failed, cancelled, waiting = enqueue_new(conn), enqueue_new(conn), enqueue_new(conn)
    queue.cancel(conn, cancelled.id)
    claimed = next(i for i in queue.claim_batch(conn, 3, "w", 60) if i.id == failed.id)
    queue.fail(conn, claimed.lease, "boom", retryable=False)
    media = [failed.media_id, cancelled.media_id, waiting.media_id]
    assert queue.close_failed_items(conn, media, MODEL) == 2
    assert queue.get_item(conn, failed.id).status == "completed"
    assert queue.get_item(conn, failed.id).last_error == "boom"
    assert queue.get_item(conn, cancelled.id).status == "completed"
    assert queue.get_item(conn, waiting.id).status == "processing"
    assert queue.close_failed_items(conn, media, MODEL) == 0


def test_leases_of_one_call_share_an_owner(conn):
    a, b = enqueue_new(conn), enqueue_new(conn)
    x = queue.claim_batch(conn, 1, "x", 60)[0]
    y = queue.claim_batch(conn, 1, "y", 60)[0]
    with pytest.raises(ValueError, match="share an owner"):
        queue.complete_many(conn, [x.lease, y.lease])
    assert {a.id, b.id} == {x.id, y.id}


# ---------------------------------------------------------------------------------------------
# failure, backoff, max attempts


def test_retryable_failure_backs_off(conn):
    item = enqueue_new(conn)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    outcome = queue.fail(conn, claimed.lease, "storage timeout", backoff_base=30, backoff_max=60)
    assert outcome.status == "queued"
    after = queue.get_item(conn, item.id)
    wait = (after.run_after - after.started_at).total_seconds()
    assert 14 <= wait <= 31  # base 30 s times jitter in [0.5, 1)
    assert after.last_error == "storage timeout" and after.error_count == 1
    assert queue.claim_batch(conn, 1, "w", 60) == []  # backoff respected

    make_claimable(conn)
    (again,) = queue.claim_batch(conn, 1, "w", 60)
    assert again.id == item.id and again.attempts == 2


def test_backoff_grows_and_is_capped(conn):
    enqueue_new(conn, max_attempts=10)
    waits = []
    for _ in range(5):
        make_claimable(conn)
        (claimed,) = queue.claim_batch(conn, 1, "w", 60)
        outcome = queue.fail(conn, claimed.lease, "x", backoff_base=10, backoff_max=45)
        waits.append((outcome.run_after - queue.get_item(conn, claimed.id).started_at).total_seconds())
    # base * 2^(n-1) * [0.5, 1): 10, 20, 40, then the 45 s cap.
    assert 4.9 <= waits[0] <= 10.1
    assert 9.9 <= waits[1] <= 20.1
    assert 19.9 <= waits[2] <= 40.1
    assert all(22.4 <= w <= 45.1 for w in waits[3:])


def test_max_attempts_ends_in_failed_with_last_error_kept(conn):
    item = enqueue_new(conn, max_attempts=2)
    for error in ("first", "second"):
        make_claimable(conn)
        (claimed,) = queue.claim_batch(conn, 1, "w", 60)
        outcome = queue.fail(conn, claimed.lease, error, backoff_base=0.01)
    assert outcome.status == "failed"
    final = queue.get_item(conn, item.id)
    assert final.status == "failed" and final.last_error == "second"
    assert final.error_count == 2 and final.completed_at is not None


def test_non_retryable_failure_fails_at_once(conn):
    item = enqueue_new(conn)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    outcome = queue.fail(conn, claimed.lease, "corrupt JPEG: truncated", retryable=False)
    assert outcome.status == "failed"
    assert queue.get_item(conn, item.id).attempts == 1


# ---------------------------------------------------------------------------------------------
# cancel and retry


def test_cancel_queued_item(conn):
    item = enqueue_new(conn)
    assert queue.cancel(conn, item.id).status == "cancelled"
    assert queue.claim_batch(conn, 1, "w", 60) == []


def test_cancel_processing_item_is_honoured_at_next_heartbeat(conn):
    item = enqueue_new(conn)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    requested = queue.cancel(conn, item.id)
    assert requested.status == "processing" and requested.cancel_requested

    report = queue.extend_leases(conn, [claimed.lease], 60)
    assert report.cancelled == [item.id] and not report.extended
    after = queue.get_item(conn, item.id)
    assert after.status == "cancelled" and after.lease_owner is None
    assert not queue.complete(conn, claimed.lease)


def test_failure_of_a_cancel_requested_item_ends_cancelled(conn):
    item = enqueue_new(conn)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    queue.cancel(conn, item.id)
    assert queue.fail(conn, claimed.lease, "boom").status == "cancelled"


@pytest.mark.parametrize("terminal", ["completed", "failed", "cancelled"])
def test_cancel_of_a_finished_item_is_illegal(conn, terminal):
    item = enqueue_new(conn)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    if terminal == "completed":
        queue.complete(conn, claimed.lease)
    elif terminal == "failed":
        queue.fail(conn, claimed.lease, "x", retryable=False)
    else:
        queue.cancel(conn, item.id)
        queue.extend_leases(conn, [claimed.lease], 60)
    with pytest.raises(IllegalTransition, match=f"cannot cancel queue item .* it is {terminal}"):
        queue.cancel(conn, item.id)


@pytest.mark.parametrize("state", ["queued", "processing", "completed"])
def test_retry_of_a_not_failed_item_is_illegal(conn, state):
    item = enqueue_new(conn)
    if state != "queued":
        (claimed,) = queue.claim_batch(conn, 1, "w", 60)
        if state == "completed":
            queue.complete(conn, claimed.lease)
    with pytest.raises(IllegalTransition, match="only allowed from failed or cancelled"):
        queue.retry(conn, item.id)


def test_retry_resets_attempts_and_keeps_the_error(conn):
    item = enqueue_new(conn, max_attempts=1)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    queue.fail(conn, claimed.lease, "model crashed")
    retried = queue.retry(conn, item.id)
    assert retried.status == "queued" and retried.attempts == 0
    assert retried.last_error == "model crashed"
    assert queue.claim_batch(conn, 1, "w", 60)[0].id == item.id


def test_retry_of_cancelled_item(conn):
    item = enqueue_new(conn)
    queue.cancel(conn, item.id)
    assert queue.retry(conn, item.id).status == "queued"


def test_retry_conflicting_with_a_newer_active_item_is_illegal(conn):
    item = enqueue_new(conn)
    queue.cancel(conn, item.id)
    newer = queue.enqueue(conn, item.media_id, MODEL)
    assert newer.id != item.id
    with pytest.raises(IllegalTransition, match="another active item exists"):
        queue.retry(conn, item.id)


def test_retry_and_cancel_of_unknown_item_is_not_found(conn):
    with pytest.raises(NotFound):
        queue.retry(conn, uuid.uuid4())
    with pytest.raises(NotFound):
        queue.cancel(conn, uuid.uuid4())


def test_retry_all_failed(conn):
    photos = [enqueue_new(conn, "photo", max_attempts=1) for _ in range(3)]
    video = enqueue_new(conn, "video", max_attempts=1)
    for claimed in queue.claim_batch(conn, 10, "w", 60):
        queue.fail(conn, claimed.lease, "x")
    # one failed photo was re-enqueued by hand in the meantime
    queue.enqueue(conn, photos[0].media_id, MODEL)

    assert queue.retry_all_failed(conn, kind="photo") == 2
    assert queue.get_item(conn, video.id).status == "failed"
    assert queue.retry_all_failed(conn) == 1
    assert queue.stats(conn).total("queued") == 4


# ---------------------------------------------------------------------------------------------
# reading


def test_stats_and_status_counts(conn):
    for _ in range(3):
        enqueue_new(conn, "photo")
    enqueue_new(conn, "video")
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    queue.complete(conn, claimed.lease)
    queue.claim_batch(conn, 1, "w", 60)

    stats = queue.stats(conn)
    assert stats.counts["queued"] == {"photo": 1, "video": 1}
    assert stats.counts["processing"] == {"photo": 1, "video": 0}
    assert stats.counts["completed"] == {"photo": 1, "video": 0}
    assert stats.status_counts() == {
        "waiting": 2, "active": 1, "completed": 1, "failed": 0, "cancelled": 0, "total": 4,
    }
    assert stats.completed_last_minute == 1
    assert stats.eta_seconds == pytest.approx(3 * 60.0)


def test_summary_view(conn):
    enqueue_new(conn, "photo")
    enqueue_new(conn, "video")
    rows = {(r.status, r.kind): r for r in queue.summary(conn)}
    assert rows[("queued", "photo")].items == 1
    assert rows[("queued", "video")].items == 1
    assert rows[("queued", "photo")].oldest_queued_at is not None


def test_list_items_filters_and_keyset_pages(conn):
    ids = [enqueue_new(conn, "photo", nbytes=n * 2_000_000).id for n in range(7)]
    video = enqueue_new(conn, "video")
    seen, cursor = [], None
    while True:
        page = queue.list_items(conn, kind="photo", limit=3, cursor=cursor)
        seen += [i.id for i in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids  # claim order, nothing missed, nothing repeated

    assert [i.id for i in queue.list_items(conn, statuses=["queued"], kind="video").items] == [video.id]
    assert queue.list_items(conn, statuses=["failed"]).items == []


def test_list_items_rejects_bad_input_before_sql(conn):
    enqueue_new(conn)
    with pytest.raises(ValueError, match="unknown status"):
        queue.list_items(conn, statuses=["queued'; DROP TABLE processing_queue; --"])
    with pytest.raises(ValueError, match="limit must be between"):
        queue.list_items(conn, limit=0)
    with pytest.raises(ValueError, match="limit must be between"):
        queue.list_items(conn, limit=10**9)
    with pytest.raises(InvalidCursor):
        queue.list_items(conn, cursor="not-a-cursor")
    with pytest.raises(ValueError, match="unknown kind"):
        queue.list_items(conn, kind="photo' OR 1=1 --")
    # A hostile model id is only ever a value: it matches nothing and harms nothing.
    assert queue.list_items(conn, model_id="x' OR '1'='1").items == []
    assert queue.stats(conn).total("queued") == 1


def test_item_detail_and_not_found(conn):
    item = enqueue_new(conn, "video", 5_000)
    detail = queue.get_item(conn, item.id)
    assert detail.kind == "video" and detail.bytes == 5_000 and detail.model_id == MODEL
    with pytest.raises(NotFound):
        queue.get_item(conn, uuid.uuid4())


def test_deleting_media_removes_its_queue_items(conn):
    waiting, done, other = enqueue_new(conn), enqueue_new(conn), enqueue_new(conn)
    claimed = next(i for i in queue.claim_batch(conn, 3, "w", 60) if i.id == done.id)
    assert queue.complete(conn, claimed.lease)
    conn.execute("DELETE FROM media_items WHERE id = ANY(%s)", [[waiting.media_id, done.media_id]])
    for gone in (waiting, done):
        with pytest.raises(NotFound):
            queue.get_item(conn, gone.id)
    assert queue.get_item(conn, other.id).status == "processing"


def test_recovery_skips_rows_locked_by_a_completing_holder(database_url, conn):
    enqueue_new(conn)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    expire_leases(conn)
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM processing_queue WHERE id = %s FOR UPDATE", [claimed.id])
        started = time.monotonic()
        assert queue.recover_expired_leases(conn) == []  # does not wait for the lock
        assert time.monotonic() - started < 2
        assert queue.complete(holder, claimed.lease)
    assert queue.get_item(conn, claimed.id).status == "completed"


def test_give_back_returns_the_item_without_spending_an_attempt(conn):
    item = enqueue_new(conn)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    assert queue.give_back(conn, [claimed.lease], "depth service unavailable") == 1
    back = queue.get_item(conn, item.id)
    assert back.status == "queued" and back.attempts == 0 and back.lease_owner is None
    assert back.last_error == "depth service unavailable"
    # A stale lease gives nothing back.
    assert queue.give_back(conn, [claimed.lease], "again") == 0


# ---------------------------------------------------------------------------------------------
# ordering and exactly-once (from the retired ready-set tests: the plain queue keeps both)


def test_claims_take_every_item_once_in_priority_order_whatever_the_arrival_order(conn):
    sizes = random.Random(3).choices(range(1, 99), k=60)
    media_ids = [insert_media(conn, "photo", s * 1_000_000).id for s in sizes]
    # Priorities arrive in no order, one at a time (uploads) and in batches (an import).
    for start in range(0, len(media_ids), 7):
        queue.enqueue_many(conn, media_ids[start:start + 7], MODEL)
    claimed = []
    while batch := queue.claim_batch(conn, 7, "w", 60, model_id=MODEL):
        claimed += batch
        queue.complete_many(conn, [i.lease for i in batch])
    assert len(claimed) == 60 == len({i.id for i in claimed})
    order = [(i.priority, i.queued_at, i.id) for i in claimed]
    assert order == sorted(order)


@pytest.mark.parametrize("model_id", [MODEL, None])
def test_concurrent_claimers_never_claim_one_item_twice(database_url, conn, model_id):
    media_ids = [insert_media(conn, "photo", 1_000_000 + n).id for n in range(200)]
    queue.enqueue_many(conn, media_ids, MODEL)
    claimed: list[list] = [[] for _ in range(4)]

    def claimer(slot: list) -> None:
        with psycopg.connect(database_url, autocommit=True) as own:
            while batch := queue.claim_batch(own, 3, f"w{id(slot)}", 60, model_id=model_id):
                slot += batch

    threads = [threading.Thread(target=claimer, args=(slot,)) for slot in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    ids = [i.id for slot in claimed for i in slot]
    assert len(ids) == 200 == len(set(ids))
