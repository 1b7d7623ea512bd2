"""The ready set and the backlog (migration 007): claims read a small set of the most urgent
items, refilled in claim order; to users every waiting item is simply queued, in one order."""

from __future__ import annotations

import random
import threading

import psycopg
import pytest

from db import queue
from tests.utils.factories import insert_media

MODEL = "tiny"
TARGET = 10


@pytest.fixture(autouse=True)
def small_ready_set(monkeypatch):
    monkeypatch.setattr(queue, "READY_TARGET", TARGET)


def media_of_sizes(conn, sizes, kind="photo"):
    return [insert_media(conn, kind, n).id for n in sizes]


def where(conn) -> dict:
    """item id -> backlog flag, for the queued items."""
    return dict(conn.execute("SELECT id, backlog FROM processing_queue WHERE status = 'queued'"))


def enqueue_as_they_arrive(conn, sizes_mb, *, batch: int = 1) -> None:
    """Enqueue items of these sizes (MB) in the order given, ``batch`` per statement: their
    priorities arrive in no order, as uploads or an import bring them."""
    media_ids = media_of_sizes(conn, [s * 1_000_000 for s in sizes_mb])
    for start in range(0, len(media_ids), batch):
        queue.enqueue_many(conn, media_ids[start:start + batch], MODEL)


def test_a_big_enqueue_readies_the_most_urgent_and_backlogs_the_rest(conn):
    sizes = random.Random(7).sample(range(1, 99), 40)
    items = queue.enqueue_many(conn, media_of_sizes(conn, [s * 1_000_000 for s in sizes]), MODEL)
    flags = where(conn)
    ready = sorted((i.priority, i.id) for i in items if not flags[i.id])
    backlog = sorted((i.priority, i.id) for i in items if flags[i.id])
    assert len(ready) == TARGET and len(backlog) == 30
    assert ready[-1] < backlog[0]
    # To users both are queued.
    assert {i.status for i in items} == {"queued"}
    assert queue.stats(conn).total("queued") == 40


def test_claims_take_every_item_once_in_priority_order_from_ready_set_and_backlog(conn):
    sizes = random.Random(3).choices(range(1, 99), k=60)
    queue.enqueue_many(conn, media_of_sizes(conn, [s * 1_000_000 for s in sizes]), MODEL)
    claimed = []
    while batch := queue.claim_batch(conn, 7, "w", 60, model_id=MODEL):
        claimed += batch
        queue.complete_many(conn, [i.lease for i in batch])
    assert len(claimed) == 60 == len({i.id for i in claimed})
    order = [(i.priority, i.queued_at, i.id) for i in claimed]
    assert order == sorted(order)


def test_an_item_claimed_from_the_backlog_comes_back_ready(conn):
    items = queue.enqueue_many(conn, media_of_sizes(conn, [1_000_000] * (TARGET + 5)), MODEL)
    backlogged = {i for i, backlog in where(conn).items() if backlog}
    claimed = queue.claim_batch(conn, TARGET + 5, "w", 60, model_id=MODEL)
    assert {i.id for i in claimed} == {i.id for i in items}
    (late,) = [i for i in claimed if i.id in backlogged][-1:]
    assert queue.fail(conn, late.lease, "flaky").status == "queued"
    assert where(conn) == {late.id: False}


def test_refill_lays_moved_rows_out_in_claim_order(conn):
    # One at a time: the heap holds them scattered.
    enqueue_as_they_arrive(conn, random.Random(11).sample(range(1, 99), 50))
    ready = sum(not backlog for backlog in where(conn).values())
    queue.complete_many(conn, [i.lease for i in queue.claim_batch(conn, ready, "w", 60)])
    waiting = [i for i, backlog in where(conn).items() if backlog]
    moved = queue.refill_ready(conn, model_id=MODEL)
    assert moved == TARGET
    rows = conn.execute(
        "SELECT ctid::text FROM processing_queue WHERE id = ANY(%s) AND NOT backlog "
        "ORDER BY priority, queued_at, id", [waiting]
    ).fetchall()
    positions = [tuple(map(int, ctid.strip("()").split(","))) for (ctid,) in rows]
    assert len(positions) == moved
    assert positions == sorted(positions)


def test_a_refill_that_the_claims_outrun_leaves_the_backlog_to_them(conn):
    queue.enqueue_many(conn, media_of_sizes(conn, [1_000_000] * (4 * TARGET)), MODEL)
    queue.complete_many(conn, [i.lease for i in queue.claim_batch(conn, TARGET, "w", 60)])
    assert sum(not backlog for backlog in where(conn).values()) == 0

    # The set is empty after a move: claims took that move's rows within the pause.
    assert queue.refill_ready(conn, model_id=MODEL, limit=3, continuing=True) == 0
    # A new pass still moves a chunk, and goes on while the set keeps what it moved.
    assert queue.refill_ready(conn, model_id=MODEL, limit=3) == 3
    assert queue.refill_ready(conn, model_id=MODEL, limit=3, continuing=True) == 3
    queue.complete_many(conn, [i.lease for i in queue.claim_batch(conn, 6, "w", 60)])
    assert queue.refill_ready(conn, model_id=MODEL, limit=3, continuing=True) == 0


def test_an_item_outranking_the_backlog_goes_straight_to_the_ready_set(conn):
    queue.enqueue_many(conn, media_of_sizes(conn, [50_000_000] * 30), MODEL)
    urgent = queue.enqueue(conn, insert_media(conn, "photo", 1_000).id, MODEL)
    later = queue.enqueue(conn, insert_media(conn, "video", 1_000).id, MODEL)
    flags = where(conn)
    assert flags[urgent.id] is False and flags[later.id] is True
    assert queue.claim_batch(conn, 1, "w", 60, model_id=MODEL)[0].id == urgent.id


def test_prioritising_a_backlog_item_readies_it(conn):
    items = queue.enqueue_many(conn, media_of_sizes(conn, [50_000_000] * 30), MODEL)
    waiting = next(i for i in items if where(conn)[i.id])
    queue.enqueue(conn, waiting.media_id, MODEL, priority=0)
    assert where(conn)[waiting.id] is False
    assert queue.claim_batch(conn, 1, "w", 60, model_id=MODEL)[0].id == waiting.id


def test_refill_moves_backlog_items_that_outrank_ready_ones(conn):
    items = queue.enqueue_many(conn, media_of_sizes(conn, [50_000_000] * 30), MODEL)
    waiting = [i.id for i in items if where(conn)[i.id]][-3:]
    # An inversion, as a race between enqueue and a refill could leave.
    conn.execute("UPDATE processing_queue SET priority = 1 WHERE id = ANY(%s)", [waiting])
    assert queue.refill_ready(conn, model_id=MODEL) == 3
    claimed = queue.claim_batch(conn, 3, "w", 60, model_id=MODEL)
    assert {i.id for i in claimed} == set(waiting)


def ready_and_backlog(conn) -> tuple[list[int], list[int]]:
    """The priorities of the queued items: (ready set, backlog)."""
    rows = conn.execute("SELECT priority, backlog FROM processing_queue WHERE status = 'queued'")
    split: tuple[list[int], list[int]] = ([], [])
    for priority, backlog in rows:
        split[backlog].append(priority)
    return split


@pytest.mark.parametrize("batch", [1, 7])
def test_arrivals_in_any_order_keep_the_ready_set_the_most_urgent(conn, batch):
    # A long queue's first fill: items arrive in no order of priority, one at a time (uploads)
    # or in batches (an import). No refill runs.
    enqueue_as_they_arrive(conn, random.Random(batch).choices(range(1, 99), k=80), batch=batch)
    ready, backlog = ready_and_backlog(conn)
    assert len(ready) == TARGET and len(backlog) == 70
    assert max(ready) <= min(backlog)
    assert queue.refill_ready(conn, model_id=MODEL) == 0  # nothing left to put right


def test_urgent_arrivals_take_the_place_of_the_ready_sets_least_urgent(conn):
    backlogged = queue.enqueue_many(conn, media_of_sizes(conn, [50_000_000] * 15), MODEL)
    urgent = []
    for _ in range(3):
        urgent += queue.enqueue_many(conn, media_of_sizes(conn, [1_000] * TARGET), MODEL)
    ready_ids = {i for i, backlog in where(conn).items() if not backlog}
    # The first urgent batch displaced the set; the later ones, no more urgent, queue behind it.
    assert ready_ids == {i.id for i in urgent[:TARGET]}
    assert queue.refill_ready(conn, model_id=MODEL) == 0
    claimed = []
    while batch := queue.claim_batch(conn, 7, "w", 60, model_id=MODEL):
        claimed += batch
        queue.complete_many(conn, [i.lease for i in batch])
    assert [i.id for i in claimed[:len(urgent)]] == [
        i.id for i in sorted(urgent, key=lambda i: (i.priority, i.queued_at, i.id))]
    assert {i.id for i in claimed[len(urgent):]} == {i.id for i in backlogged}


def test_inversions_beyond_a_full_ready_set_send_its_least_urgent_back(conn):
    items = queue.enqueue_many(conn, media_of_sizes(conn, [50_000_000] * 40), MODEL)
    # Backlog items more urgent than the ready set, as racing enqueues and refills can leave.
    waiting = [i.id for i in items if where(conn)[i.id]][:15]
    conn.execute("UPDATE processing_queue SET priority = 1 WHERE id = ANY(%s)", [waiting])
    while queue.refill_ready(conn, model_id=MODEL, limit=5):
        pass
    ready, backlog = ready_and_backlog(conn)
    assert len(ready) <= 2 * TARGET  # 25 if the refill only promoted
    assert ready.count(1) == 15 and max(ready) <= min(backlog)


def test_each_model_has_its_own_ready_set(conn):
    media_ids = media_of_sizes(conn, [1_000_000] * 30)
    queue.enqueue_many(conn, media_ids, "other")  # fills the other model's ready set
    queue.enqueue_many(conn, media_ids, MODEL)
    assert sum(not b for b in where(conn).values()) == 2 * TARGET
    claimed = []
    while batch := queue.claim_batch(conn, 8, "w", 60, model_id=MODEL):
        claimed += batch
    assert len(claimed) == 30 and {i.model_id for i in claimed} == {MODEL}


def test_a_claim_for_any_model_reaches_every_models_backlog(conn):
    media_ids = media_of_sizes(conn, [1_000_000] * 25)
    for model in ("a", "b", "c"):
        queue.enqueue_many(conn, media_ids, model)
    claimed = []
    while batch := queue.claim_batch(conn, 8, "w", 60):
        claimed += batch
    assert len(claimed) == 75 == len({i.id for i in claimed})


def test_held_items_and_finished_backlog_items_are_never_backlogged(conn):
    held = queue.enqueue_many(conn, media_of_sizes(conn, [1_000] * 30), MODEL, hold=True)
    assert conn.execute("SELECT bool_or(backlog) FROM processing_queue").fetchone()[0] is False
    queue.release(conn, [i.id for i in held])
    assert queue.stats(conn).total("queued") == 30
    # A cancelled backlog item closed by the bulk job lands in the completed table.
    waiting = queue.enqueue_many(conn, media_of_sizes(conn, [90_000_000] * 30), MODEL)
    victim = next(i for i in waiting if where(conn)[i.id])
    queue.cancel(conn, victim.id)
    assert queue.close_failed_items(conn, [victim.media_id], MODEL) == 1
    assert queue.get_item(conn, victim.id).status == "completed"


def hold_a_refill(database_url):
    """Start a refill in its own transaction and keep it open; returns (conn, moved ids)."""
    mover = psycopg.connect(database_url)
    moved = [r[0] for r in mover.execute(
        "SELECT id FROM processing_queue WHERE backlog ORDER BY priority, queued_at, id "
        "LIMIT %s", [queue.REFILL_CHUNK]).fetchall()]
    assert queue.refill_ready(mover, model_id=MODEL) > 0
    return mover, moved


def test_cancel_waiting_on_a_refill_cancels_the_moved_item(database_url, conn):
    queue.enqueue_many(conn, media_of_sizes(conn, [50_000_000] * 30), MODEL)
    queue.complete_many(conn, [i.lease for i in queue.claim_batch(conn, TARGET, "w", 60)])
    mover, moved = hold_a_refill(database_url)
    result: list = []
    canceller = threading.Thread(target=lambda: result.append(_cancel(database_url, moved[0])))
    canceller.start()
    canceller.join(timeout=1)
    assert canceller.is_alive()  # waiting on the refill's row lock
    mover.commit()
    mover.close()
    canceller.join(timeout=30)
    assert result and result[0] == "cancelled"


def _cancel(database_url, item_id):
    with psycopg.connect(database_url, autocommit=True) as own:
        try:
            return queue.cancel(own, item_id).status
        except Exception as exc:
            return repr(exc)


def test_media_deleted_during_a_refill_leaves_no_item(database_url, conn):
    queue.enqueue_many(conn, media_of_sizes(conn, [50_000_000] * 30), MODEL)
    queue.complete_many(conn, [i.lease for i in queue.claim_batch(conn, TARGET, "w", 60)])
    mover, moved = hold_a_refill(database_url)
    media_id = conn.execute(
        "SELECT media_id FROM processing_queue WHERE id = %s", [moved[0]]).fetchone()[0]
    deleter = threading.Thread(target=lambda: _delete_media(database_url, media_id))
    deleter.start()
    deleter.join(timeout=1)
    mover.commit()
    mover.close()
    deleter.join(timeout=30)
    assert not deleter.is_alive()
    assert conn.execute(
        "SELECT count(*) FROM queue_items WHERE media_id = %s", [media_id]).fetchone()[0] == 0


def _delete_media(database_url, media_id):
    with psycopg.connect(database_url, autocommit=True) as own:
        own.execute("DELETE FROM media_items WHERE id = %s", [media_id])


def test_a_refill_passes_over_media_being_deleted(database_url, conn):
    items = queue.enqueue_many(conn, media_of_sizes(conn, [50_000_000] * 30), MODEL)
    queue.complete_many(conn, [i.lease for i in queue.claim_batch(conn, TARGET, "w", 60)])
    first = min((i for i in items if where(conn).get(i.id)), key=lambda i: (i.priority, i.id))
    deleter = psycopg.connect(database_url)
    deleter.execute("DELETE FROM media_items WHERE id = %s", [first.media_id])  # not committed
    result: list = []
    mover = threading.Thread(target=lambda: result.append(_refill(database_url)))
    mover.start()
    mover.join(timeout=10)
    # Waiting on the delete instead would end in a deadlock once its cascade reaches the row.
    assert not mover.is_alive() and result and result[0] == TARGET
    deleter.commit()
    deleter.close()
    assert conn.execute(
        "SELECT count(*) FROM queue_items WHERE media_id = %s", [first.media_id]).fetchone()[0] == 0


def _refill(database_url):
    with psycopg.connect(database_url, autocommit=True) as own:
        return queue.refill_ready(own, model_id=MODEL)


def test_enqueueing_the_ready_sets_least_urgent_again_returns_it(conn):
    ready = media_of_sizes(conn, [n * 1_000_000 for n in range(1, TARGET + 1)])
    queue.enqueue_many(conn, ready + media_of_sizes(conn, [50_000_000] * 5), MODEL)
    # Already active and ready, it adds no ready row, so it displaces nothing (counted as a
    # new arrival, it would push the next least urgent out of a full set).
    again = queue.enqueue(conn, ready[-1], MODEL)
    assert again.created is False and where(conn)[again.id] is False
    # Made more urgent than anything ("process this now"): it moves forward where it is; the
    # statement never picks its own row as the one to displace.
    urgent = queue.enqueue(conn, ready[-1], MODEL, priority=0)
    assert urgent.id == again.id and urgent.priority == 0 and where(conn)[urgent.id] is False
    assert sum(not b for b in where(conn).values()) == TARGET
