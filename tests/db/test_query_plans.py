"""Pin the plans that keep the queue fast as it grows."""

from __future__ import annotations

import json

import psycopg
import pytest

from db import queue
from devkit.factories import bulk_media


def plan(conn, query, params) -> str:
    text = query if isinstance(query, bytes) else query.as_bytes(conn)
    rows = conn.execute(b"EXPLAIN (FORMAT JSON) " + text, params).fetchone()
    return json.dumps(rows[0])


def test_claim_uses_the_claimable_partial_index(conn):
    # Enough finished rows that a sequential scan would be the wrong plan.
    media_ids = bulk_media(conn, 20_000)
    queue.enqueue_many(conn, media_ids, "tiny")
    conn.execute(
        "UPDATE processing_queue SET status = 'failed', completed_at = now() "
        "WHERE id IN (SELECT id FROM processing_queue LIMIT 19900)"
    )
    conn.execute("ANALYZE processing_queue")
    params = {"n": 10, "owner": "w", "lease_seconds": 60, "model_id": "tiny", "ids": [],
              "attempts": [], "outputs": [], "model_ids": ["tiny", "tiny:2"]}
    # Any model, one model, several (a scheduler serving two).
    for scope in ("any", "one", "several"):
        for query in (queue.build_claim_query(scope), queue.build_complete_and_claim_query(scope)):
            text = plan(conn, query, params)
            assert "processing_queue_claimable" in text, text
            assert "Seq Scan" not in text, text


def test_a_claim_for_one_model_reads_the_claim_index_with_no_join_or_scan(conn):
    # The claimed ids reach the UPDATE as an array: joined to the table, a plan that cannot
    # tell how many rows LIMIT lets through hash-joined a sequential scan of every row (0.5 s
    # with 1M queued).
    queue.enqueue_many(conn, bulk_media(conn, 20_000), "tiny")
    conn.execute("ANALYZE processing_queue")
    params = {"n": 10, "owner": "w", "lease_seconds": 60, "model_id": "tiny"}
    text = plan(conn, queue.build_claim_query("one"), params)
    assert "processing_queue_claimable" in text, text
    assert "Seq Scan" not in text and "Hash" not in text, text


def test_lease_recovery_uses_the_leases_partial_index(conn):
    media_ids = bulk_media(conn, 20_000)
    queue.enqueue_many(conn, media_ids, "tiny")
    conn.execute("ANALYZE processing_queue")
    from db.queue.statements import RECOVER

    assert "processing_queue_leases" in plan(conn, RECOVER, {"limit": 100})


def nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def test_a_claim_for_one_model_reads_the_claim_index_in_claim_order(conn):
    # model_id leads processing_queue_claimable (migrations 008, 009): this model's most urgent
    # rows are one index range in claim order whatever the statistics say, with no sort.
    queue.enqueue_many(conn, bulk_media(conn, 20_000), "tiny")
    conn.execute("ANALYZE processing_queue")
    params = {"n": 100, "owner": "w", "lease_seconds": 60, "model_id": "tiny"}
    claim = json.loads(plan(conn, queue.build_claim_query("one"), params))[0]["Plan"]
    (picked,) = [n for n in nodes(claim) if n.get("Subplan Name") == "CTE next"]
    assert "processing_queue_claimable" in json.dumps(picked), picked
    assert not {"Seq Scan", "Sort"} & {n["Node Type"] for n in nodes(picked)}, picked


def test_webhook_claims_read_open_deliveries_not_the_delivered_history(conn):
    from db import webhooks
    from db.webhooks import deliverer

    webhooks.create(conn, "https://example.com/hook", ["*"], "whsec_" + "A" * 32)
    conn.execute("INSERT INTO event_batches (types, detail) "
                 "SELECT ARRAY['item.completed'], ARRAY['{}'::jsonb] FROM generate_series(1, 20000)")
    conn.execute("UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now() "
                 "WHERE id IN (SELECT id FROM webhook_deliveries ORDER BY id LIMIT 19990)")
    conn.execute("ANALYZE webhook_deliveries")
    conn.execute("ANALYZE event_batches")
    rows = conn.execute("EXPLAIN (FORMAT JSON) " + deliverer._CLAIM,
                        {"n": 16, "owner": "w", "lease_s": 30, "webhook": None}).fetchone()
    scanned = [n for n in nodes(rows[0][0]["Plan"])
               if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in ("webhook_deliveries", "event_batches")]
    assert not scanned, json.dumps(rows[0])


def test_a_queue_cycle_with_a_webhook_subscribed_compiles_nothing(conn, database_url):
    # The fan-out trigger runs inside the queue trigger's nested-loops-off setting, where its
    # join of a few rows was priced above jit_above_cost and JIT-compiled every cycle (~90 ms).
    # auto_explain shows every nested statement's plan, JIT included when it happened. The
    # cycle runs on a connection of its own, as a scheduler's would: a session's first fan-out
    # plans it, and plpgsql keeps that plan.
    from db import webhooks

    webhooks.create(conn, "https://example.com/hook", ["item.*"], "whsec_" + "A" * 32)
    queue.enqueue_many(conn, bulk_media(conn, 20), "tiny")
    with psycopg.connect(database_url, autocommit=True) as worker:
        try:
            worker.execute("LOAD 'auto_explain'")
        except psycopg.Error as e:
            pytest.skip(f"this Postgres has no auto_explain to show nested plans: {e}")
        plans: list[str] = []
        worker.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        for setting in ("auto_explain.log_min_duration = 0",
                        "auto_explain.log_nested_statements = on",
                        "auto_explain.log_analyze = on", "client_min_messages = log"):
            worker.execute(f"SET {setting}")
        claimed = queue.claim_batch(worker, 10, "w", 60, model_id="tiny")
        queue.complete_and_claim(worker, [c.lease for c in claimed], 10, "w", 60,
                                 model_id="tiny", outputs={c.lease.item_id: [] for c in claimed})
    fanned = [p for p in plans if "INSERT INTO webhook_deliveries" in p]
    assert fanned, plans  # the fan-out ran, and its plans were shown
    compiled = [p for p in plans if "JIT:" in p]
    assert not compiled, compiled[0]


def test_a_reader_pages_through_the_outbox_by_its_commit_order_index(conn):
    # Each event is an element of its batch, so the read expands batches; it must pick the next
    # batches through the (xid, id) index and stop, not expand and sort all that follow.
    from db import events

    conn.execute("INSERT INTO event_batches (types, detail) SELECT ARRAY['item.completed', "
                 "'item.started'], ARRAY['{}'::jsonb, '{}'::jsonb] FROM generate_series(1, 20000)")
    conn.execute("ANALYZE event_batches")
    first = events.read_after(conn, None, limit=1)[0]
    params = {"xid": "0", "batch": 0, "after": first.id, "min_id": 0, "limit": 100,
              "horizon": events._horizon(conn)}
    rows = conn.execute("EXPLAIN (FORMAT JSON) " + events._READ, params).fetchone()
    scans = [n for n in nodes(rows[0][0]["Plan"]) if n.get("Relation Name") == "event_batches"]
    assert [n["Node Type"] for n in scans] == ["Index Scan"], json.dumps(rows[0])
    assert scans[0]["Index Name"] == "event_batches_in_commit_order"
