"""Many claimers at once over thousands of items: every item processed exactly once."""

from __future__ import annotations

import threading
from collections import Counter

import psycopg

from db import media, queue
from devkit.factories import bulk_media, new_media

ITEMS = 3000
CLAIMERS = 10


def test_exactly_once_claiming_with_concurrent_claimers(database_url, conn):
    media_ids = bulk_media(conn, ITEMS)
    queue.enqueue_many(conn, media_ids, "tiny")
    claimed_by: dict[str, list] = {f"claimer-{n}": [] for n in range(CLAIMERS)}
    errors: list[BaseException] = []
    start = threading.Barrier(CLAIMERS)

    def claimer(owner: str) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                start.wait()
                while batch := queue.claim_batch(own, 25, owner, 60):
                    claimed_by[owner] += [i.id for i in batch]
                    done = queue.complete_many(own, [i.lease for i in batch])
                    assert done == {i.id for i in batch}
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(owner,)) for owner in claimed_by]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert not errors
    counts = Counter(i for ids in claimed_by.values() for i in ids)
    assert len(counts) == ITEMS
    assert max(counts.values()) == 1
    # The work was actually shared, not serialised behind one claimer.
    assert sum(1 for ids in claimed_by.values() if ids) >= CLAIMERS // 2
    stats = queue.stats(conn)
    assert stats.total("completed") == ITEMS and stats.remaining == 0
    assert conn.execute("SELECT max(attempts), min(attempts) FROM queue_items").fetchone() == (1, 1)


def test_concurrent_enqueue_of_the_same_media_makes_one_item(database_url, conn):
    media_ids = bulk_media(conn, 200)
    results: list[list] = []
    start = threading.Barrier(8)

    def enqueuer() -> None:
        with psycopg.connect(database_url, autocommit=True) as own:
            start.wait()
            results.append(queue.enqueue_many(own, media_ids, "tiny"))

    threads = [threading.Thread(target=enqueuer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert len(results) == 8
    assert conn.execute("SELECT count(*) FROM processing_queue").fetchone()[0] == 200
    created = sum(item.created for batch in results for item in batch)
    assert created == 200
    assert all({i.media_id for i in batch} == set(media_ids) for batch in results)


def test_media_deleted_while_its_items_complete_leaves_no_orphans(database_url, conn):
    media_ids = bulk_media(conn, 600)
    queue.enqueue_many(conn, media_ids, "tiny")
    claimed = queue.claim_batch(conn, 600, "w", 60)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def completer() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                start.wait()
                for i in range(0, len(claimed), 10):
                    queue.complete_many(own, [c.lease for c in claimed[i:i + 10]])
        except BaseException as exc:
            errors.append(exc)

    def deleter() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                start.wait()
                # Every other media item, one at a time as the API deletes them, in the order
                # the completer goes, so the two meet.
                for c in claimed[::2]:
                    own.execute("DELETE FROM media_items WHERE id = %s", [c.media_id])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=completer), threading.Thread(target=deleter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    orphans = conn.execute(
        "SELECT count(*) FROM queue_items q "
        "WHERE NOT EXISTS (SELECT 1 FROM media_items m WHERE m.id = q.media_id)"
    ).fetchone()[0]
    assert orphans == 0
    assert queue.stats(conn).total("completed") == 300


def test_concurrent_inserts_of_the_same_content_make_one_media_row(database_url, conn):
    # Two copies of one photo in a folder import reach the insert together. Both unique
    # columns (sha256 and the storage key made from it) conflict; neither may raise.
    uploaders, rounds = 8, 25
    contents = [new_media() for _ in range(rounds)]
    results: list[tuple[int, media.MediaItem]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(uploaders)

    def uploader() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                for n, content in enumerate(contents):
                    start.wait()
                    results.append((n, media.insert(own, content)))
        except BaseException as exc:
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=uploader) for _ in range(uploaders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert not errors
    assert len(results) == uploaders * rounds
    for n in range(rounds):
        rows = [row for m, row in results if m == n]
        assert len({row.id for row in rows}) == 1
        assert sum(row.created for row in rows) == 1
    assert conn.execute("SELECT count(*) FROM media_items").fetchone()[0] == rounds
