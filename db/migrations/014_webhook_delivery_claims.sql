-- Claiming webhook deliveries takes the oldest due delivery of each endpoint, and only of an
-- endpoint with none in flight (db/webhooks.py): both read an endpoint's open deliveries in id
-- order, which this index holds without touching delivered history.
CREATE INDEX webhook_deliveries_open_of_endpoint ON webhook_deliveries (webhook_id, id)
    WHERE status IN ('pending', 'delivering');
