"""The events outbox on real Postgres: each change writes its event in its own transaction,
rolled-back changes write none, and readers resuming after an event miss nothing."""

from __future__ import annotations

import threading

import psycopg
import pytest

from db import events, media, queue
from devkit.factories import insert_media

MODEL = "tiny"


def types_since(conn: psycopg.Connection, after: int | None) -> list[str]:
    return [e.type for e in events.read_after(conn, after)]


def test_an_items_life_is_told_in_order(conn):
    start = events.latest(conn)
    m = insert_media(conn, "photo", 1000)
    item = queue.enqueue(conn, m.id, MODEL)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    outcome = queue.fail(conn, claimed.lease, "decoder crashed", backoff_base=0, backoff_max=0)
    assert outcome.status == "queued"
    (again,) = queue.claim_batch(conn, 1, "w", 60)
    outputs = {again.id: [{"format": "png16", "width": 4, "height": 3}]}
    assert queue.complete(conn, again.lease, outputs)

    got = events.read_after(conn, start)
    assert [e.type for e in got] == ["media.created", "item.queued", "item.started",
                                     "item.retrying", "item.started", "item.completed"]
    assert all(e.data.get("media_id") == str(m.id) for e in got)
    retrying, completed = got[3].data, got[5].data
    assert retrying["error"] == "decoder crashed" and retrying["attempt"] == 1
    assert retrying["next_attempt_at"]
    assert completed["item_id"] == str(item.id) and completed["model"] == MODEL
    assert completed["outputs"] == [{"format": "png16", "width": 4, "height": 3}]
    assert completed["attempt"] == 2 and completed["seconds"] >= 0


def test_failed_cancelled_retried_and_deleted_each_say_so(conn):
    start = events.latest(conn)
    a = queue.enqueue(conn, insert_media(conn, "photo", 10).id, MODEL)
    b = queue.enqueue(conn, insert_media(conn, "photo", 20).id, MODEL)
    queue.cancel(conn, b.id)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    queue.fail(conn, claimed.lease, "not an image", retryable=False)
    queue.retry(conn, a.id)
    assert media.delete(conn, a.media_id)

    got = events.read_after(conn, start)
    kinds = [e.type for e in got if e.type != "media.created"]
    assert kinds == ["item.queued", "item.queued", "item.cancelled", "item.started",
                     "item.failed", "item.queued", "media.deleted"]
    failed = next(e for e in got if e.type == "item.failed")
    assert failed.data["last_error"] == "not an image"
    assert next(e for e in got if e.type == "media.deleted").data["media_id"] == str(a.media_id)


def test_heartbeats_and_duplicate_enqueues_write_nothing(conn):
    item = queue.enqueue(conn, insert_media(conn, "photo", 10).id, MODEL)
    (claimed,) = queue.claim_batch(conn, 1, "w", 60)
    start = events.latest(conn)
    queue.extend_leases(conn, [claimed.lease], 60)
    queue.enqueue(conn, item.media_id, MODEL, priority=0)
    assert types_since(conn, start) == []


def test_a_rolled_back_change_has_no_event_and_a_committed_one_always_has(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        start = events.latest(conn)
        with pytest.raises(RuntimeError), conn.transaction():
            insert_media(conn, "photo", 10)
            raise RuntimeError("the upload failed half way")
        assert types_since(conn, start) == []
        with conn.transaction():
            m = insert_media(conn, "photo", 10)
            queue.enqueue(conn, m.id, MODEL)
        assert types_since(conn, start) == ["media.created", "item.queued"]


def test_an_event_committed_late_with_a_smaller_id_is_not_passed_over(database_url):
    with psycopg.connect(database_url) as slow, psycopg.connect(database_url, autocommit=True) as fast:
        start = events.latest(fast)
        slow_id = events.emit(slow, "webhook.test", {"n": "slow"})  # open, uncommitted
        fast_id = events.emit(fast, "webhook.test", {"n": "fast"})
        assert slow_id < fast_id
        # The slow transaction holds readers back: nothing after it is handed out yet.
        assert events.read_after(fast, start) == []
        slow.commit()
        got = events.read_after(fast, start)
        assert [e.data["n"] for e in got] == ["slow", "fast"]
        # Resuming after either one gives exactly what follows it.
        assert [e.id for e in events.read_after(fast, got[0].id)] == [fast_id]
        assert events.read_after(fast, got[1].id) == []


def test_filters_and_unknown_positions(conn):
    m = insert_media(conn, "video", 10)
    queue.enqueue(conn, m.id, MODEL)
    everything = events.read_after(conn, None)
    def read(patterns):
        return [e.type for e in events.read_after(conn, None) if events.matches(patterns, e.type)]

    assert read(["item.*"]) == ["item.queued"]
    assert read(["media.created"]) == ["media.created"]
    # An id the outbox does not hold resumes by id.
    assert events.read_after(conn, everything[-1].id + 1000) == []
    assert [e.id for e in events.read_after(conn, everything[0].id)] == [everything[1].id]


def test_patterns_are_checked():
    assert events.check_patterns(["item.*", "media.created", "*", "item.*"]) == [
        "item.*", "media.created", "*"]
    for bad in ["item.exploded", "nothing.*", "item", "", "ITEM.*"]:
        with pytest.raises(ValueError, match="unknown event type"):
            events.check_patterns([bad])
    assert events.matches(["item.*"], "item.failed") and not events.matches(["item.*"], "media.created")
    assert events.matches(None, "queue.drained")


def test_concurrent_writers_each_event_read_once(database_url):
    """Many transactions committing in any order: a reader polling as they go sees each event
    exactly once."""
    with psycopg.connect(database_url, autocommit=True) as reader:
        position = events.latest(reader)
        seen: list[int] = []

        def write(n: int) -> None:
            with psycopg.connect(database_url) as c:
                for i in range(n):
                    events.emit(c, "webhook.test", {"i": i})
                    if i % 3 == 0:
                        c.commit()
                c.commit()

        writers = [threading.Thread(target=write, args=(20,)) for _ in range(4)]
        for w in writers:
            w.start()
        while True:
            writing = any(w.is_alive() for w in writers)  # before the read: then it saw all
            batch = events.read_after(reader, position)
            seen += [e.id for e in batch]
            position = batch[-1].id if batch else position
            if not batch and not writing:
                break
        assert len(seen) == len(set(seen)) == 80


def test_drained_only_when_nothing_is_left_to_run(conn):
    start = events.latest(conn)
    queue.enqueue(conn, insert_media(conn, "photo", 10).id, MODEL)
    queue.enqueue(conn, insert_media(conn, "photo", 20).id, MODEL)
    first, second = queue.claim_batch(conn, 2, "w", 60)
    assert queue.complete(conn, first.lease)
    assert not queue.report_if_drained(conn, MODEL)  # one still running
    queue.fail(conn, second.lease, "flaky", backoff_base=60, backoff_max=60)
    assert not queue.report_if_drained(conn, MODEL)  # backing off is still to run
    conn.execute("UPDATE processing_queue SET run_after = now() WHERE status = 'queued'")
    (again,) = queue.claim_batch(conn, 1, "w", 60)
    queue.fail(conn, again.lease, "broken", retryable=False)
    assert queue.report_if_drained(conn, MODEL)
    drained = [e for e in events.read_after(conn, start) if e.type == "queue.drained"]
    assert [d.data for d in drained] == [{"model": MODEL, "failed": 1}]


def test_one_statement_changing_many_items_writes_every_event(conn):
    from devkit.factories import bulk_media

    queue.enqueue_many(conn, bulk_media(conn, 5_000), MODEL)
    start = events.latest(conn)
    conn.execute("UPDATE processing_queue SET status = 'failed', completed_at = now()")
    n = conn.execute("SELECT count(DISTINCT data->>'item_id') FROM events "
                     "WHERE type = 'item.failed' AND id > %s", [start or 0]).fetchone()[0]
    assert n == 5_000
    # The statement's events fill several outbox batches (1,024 at most each); a reader pages
    # through all of them once, in order, and resumes from any one of them.
    sizes = [r[0] for r in conn.execute(
        "SELECT cardinality(types) FROM event_batches WHERE id > %s ORDER BY id", [start or 0])]
    assert sizes == [1024] * 4 + [5_000 - 4 * 1024]
    read, position = [], start
    while page := events.read_after(conn, position, limit=700):
        read += page
        position = page[-1].id
    assert [e.type for e in read] == ["item.failed"] * 5_000
    ids = [e.id for e in read]
    assert ids == sorted(set(ids))
    items = {str(r[0]) for r in conn.execute("SELECT id FROM processing_queue")}
    assert {e.data["item_id"] for e in read} == items
    middle = read[1500]
    assert [e.id for e in events.read_after(conn, middle.id, limit=3)] == ids[1501:1504]


def test_a_queue_cycle_is_one_batch_each_event_with_its_own_id(conn):
    from devkit.factories import bulk_media

    queue.enqueue_many(conn, bulk_media(conn, 6), MODEL)
    held = queue.claim_batch(conn, 3, "w", 60, model_id=MODEL)
    start = events.latest(conn)
    batches = conn.execute("SELECT count(*) FROM event_batches").fetchone()[0]
    outputs = {held[0].id: [{"format": "png16", "width": 4, "height": 3}]}
    done, claimed = queue.complete_and_claim(conn, [i.lease for i in held], 3, "w", 60,
                                             model_id=MODEL, outputs=outputs)
    assert len(done) == 3 and len(claimed) == 3
    assert conn.execute("SELECT count(*) FROM event_batches").fetchone()[0] == batches + 1
    got = events.read_after(conn, start)
    assert [e.type for e in got] == ["item.completed"] * 3 + ["item.started"] * 3
    assert [e.data["item_id"] for e in got] == [str(i.id) for i in held + claimed]
    assert [e.id for e in got] == list(range(got[0].id, got[0].id + 6))
    assert got[0].data["outputs"] == outputs[held[0].id] and got[1].data["outputs"] == []
    assert got[3].data == {
        "item_id": str(claimed[0].id), "media_id": str(claimed[0].media_id), "model": MODEL,
        "kind": "photo", "status": "processing", "priority": claimed[0].priority,
        "attempt": 1, "max_attempts": claimed[0].max_attempts, "worker": "w"}
    # Resuming inside the batch gives the rest of it; the view agrees with the reader.
    assert events.read_after(conn, got[2].id) == got[3:]
    view = conn.execute("SELECT id, type, data FROM events WHERE id >= %s ORDER BY xid, id",
                        [got[0].id]).fetchall()
    assert view == [(e.id, e.type, e.data) for e in got]
