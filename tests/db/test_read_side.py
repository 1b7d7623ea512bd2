"""The read side does not scan history: completed totals are counters the archive's triggers keep
in the completing transaction, recent throughput is a range of the completion-time index."""

from __future__ import annotations


from db import media, queue
from db.queue.statements import STATS
from devkit.factories import bulk_media


def complete_all(conn, kind="photo", n=5, model="tiny"):
    ids = bulk_media(conn, n, kind=kind)
    queue.enqueue_many(conn, ids, model)
    claimed = queue.claim_batch(conn, n, "w", 60, model_id=model)
    done = queue.complete_many(conn, [c.lease for c in claimed])
    assert len(done) == n
    return ids


def archived(conn, kind):
    return conn.execute("SELECT count(*) FROM processing_queue_completed WHERE kind = %s",
                        (kind,)).fetchone()[0]


def test_completed_totals_follow_completions_deletions_and_rollbacks(conn):
    photos = complete_all(conn, "photo", 5)
    complete_all(conn, "video", 2)
    stats = queue.stats(conn)
    assert stats.counts["completed"] == {"photo": 5, "video": 2}
    assert stats.completed_last_minute == 7 and stats.completed_last_hour == 7

    media.delete(conn, photos[0])  # its archived item goes with it, and its count
    media.delete(conn, photos[1])
    assert queue.stats(conn).counts["completed"]["photo"] == archived(conn, "photo") == 3

    conn.commit()
    with conn.transaction(force_rollback=True):
        complete_all(conn, "photo", 4)
        assert queue.stats(conn).counts["completed"]["photo"] == 7
    assert queue.stats(conn).counts["completed"]["photo"] == 3  # rolled back: never counted

    summary = {(r.status, r.kind): r for r in queue.summary(conn)}
    assert summary[("completed", "photo")].items == 3
    assert summary[("completed", "video")].items == 2


def test_stats_and_summary_read_no_history(conn):
    # A long history: a sequential scan of the archive would be the planner's choice for any
    # query that needs all of it.
    ids = bulk_media(conn, 20_000)
    queue.enqueue_many(conn, ids, "tiny")
    claimed = queue.claim_batch(conn, 20_000, "w", 60, model_id="tiny")
    queue.complete_many(conn, [c.lease for c in claimed])
    conn.execute("UPDATE processing_queue_completed SET completed_at = now() - interval '2 days'")
    conn.execute("ANALYZE processing_queue_completed")
    conn.execute("ANALYZE queue_completed_totals")
    for query in (STATS, b"SELECT * FROM processing_queue_summary"):
        (text,) = conn.execute(b"EXPLAIN (FORMAT JSON) " + query).fetchone()
        for node in _scans(text[0]["Plan"]):
            assert node.get("Relation Name") != "processing_queue_completed" or \
                node["Node Type"] in ("Index Only Scan", "Index Scan"), node
    assert queue.stats(conn).counts["completed"]["photo"] == 20_000


def _scans(node):
    yield node
    for child in node.get("Plans", []):
        yield from _scans(child)
