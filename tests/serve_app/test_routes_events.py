"""/api/events: the live stream out of the outbox, its filter, resuming, heartbeats, tokens, and
the documented event bodies checked against real events.

The stream never ends by itself, and the TestClient reads a response whole, so these tests serve
the app with uvicorn on a port of their own and read it with httpx, as a client would.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn

from cluster.runtime import free_port
from db import events, keys, media, queue, webhooks
from serve_app.api.event_schemas import EVENT_MODELS, body
from devkit.factories import insert_media

MODEL = "tiny"
KEY = "events-key-0123456789"


class Served:
    """The app of an ``Api`` on a real port (uvicorn in a thread)."""

    def __init__(self, app, *, access_log: bool = False) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, access_log=access_log,
            lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            self.thread.join(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve_api(make_api) -> Iterator:
    served: list[Served] = []

    def serve(*, access_log: bool = False, **overrides):
        api = make_api(**{"events_heartbeat_s": 5.0, "events_poll_s": 0.5, **overrides})
        served.append(Served(api.client.app, access_log=access_log))
        return api, served[-1]

    yield serve
    for s in served:
        s.stop()


@dataclass
class Message:
    event: str | None = None
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> dict:
        return json.loads(self.data)


class Stream:
    """One open /api/events response, parsed message by message."""

    def __init__(self, response: httpx.Response) -> None:
        self.response, self.lines = response, response.iter_lines()

    def next(self) -> Message:
        message = Message()
        for line in self.lines:
            if line == "":
                if message.event or message.data or message.comments:
                    return message
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                message.comments.append(value)
            elif name == "data":
                message.data += value
            elif name in ("event", "id"):
                setattr(message, name, value)
        raise EOFError("the stream ended")

    def events(self, n: int) -> list[Message]:
        got = []
        while len(got) < n:
            m = self.next()
            if m.event:
                got.append(m)
        return got


@pytest.fixture
def open_stream() -> Iterator:
    clients: list[httpx.Client] = []
    contexts = []

    def open_(base: str, *, params=None, headers=None, timeout: float = 15) -> Stream:
        client = httpx.Client(base_url=base, timeout=httpx.Timeout(timeout))
        clients.append(client)
        ctx = client.stream("GET", "/api/events", params=params, headers=headers)
        response = ctx.__enter__()
        contexts.append(ctx)
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return Stream(response)

    yield open_
    for ctx in contexts:
        ctx.__exit__(None, None, None)
    for client in clients:
        client.close()


def written_after(db, after: int | None, n: int) -> list[events.Event]:
    """The ``n`` events after ``after``, once readable: a reader waits for every older
    transaction on the server to end (another test's, on a shared server), so read until then."""
    deadline = time.monotonic() + 10
    while len(got := db.run(events.read_after, after)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(got) == n, [e.type for e in got]
    return got


def lifecycle(db) -> None:
    """One item through queued, started, retrying, started again and completed."""
    with db.connection() as conn:
        m = insert_media(conn, "photo", 1000, original_name="a.jpg", width=4, height=3)
    db.run(queue.enqueue, m.id, MODEL)
    (claimed,) = db.run(queue.claim_batch, 1, "w", 60, model_id=MODEL)
    db.run(queue.fail, claimed.lease, "flaky", backoff_base=0, backoff_max=0)
    (again,) = db.run(queue.claim_batch, 1, "w", 60, model_id=MODEL)
    db.run(queue.complete, again.lease, {again.id: [{"format": "png16", "width": 4, "height": 3}]})


def test_the_stream_sends_what_happens_after_it_opens_filtered_and_in_order(
        serve_api, open_stream):
    api, served = serve_api()
    start = api.ctx.db.run(events.latest)
    lifecycle(api.ctx.db)  # before the stream opens: history, not sent
    written_after(api.ctx.db, start, 6)  # readable, so "now" is after it
    stream = open_stream(served.url, params={"types": "item.started,item.completed"})
    lifecycle(api.ctx.db)
    got = stream.events(3)
    assert [m.event for m in got] == ["item.started", "item.started", "item.completed"]
    ids = [int(m.id) for m in got]
    assert ids == sorted(ids)
    for m in got:
        assert m.json["type"] == m.event
        EVENT_MODELS[m.event].model_validate(m.json)
    done = got[2].json
    assert done["data"]["outputs"] == [{"format": "png16", "width": 4, "height": 3}]
    assert done["timestamp"][:4].isdigit() and "T" in done["timestamp"]


def test_a_family_filter_and_unknown_types(serve_api, open_stream):
    api, served = serve_api()
    stream = open_stream(served.url, params={"types": "media.*"})
    lifecycle(api.ctx.db)
    with api.ctx.db.connection() as conn:
        gone = insert_media(conn)
        media.delete(conn, gone.id)
    assert [m.event for m in stream.events(3)] == ["media.created", "media.created",
                                                   "media.deleted"]
    for bad in ("item.exploded", "nothing", "item.*,bogus.*"):
        r = httpx.get(served.url + "/api/events", params={"types": bad})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        assert "unknown event type" in r.json()["error"]["message"]


def test_resuming_after_an_event_gets_exactly_what_followed(serve_api, open_stream):
    api, served = serve_api()
    start = api.ctx.db.run(events.latest)
    lifecycle(api.ctx.db)
    written = written_after(api.ctx.db, start, 6)
    after = written[1].id
    by_header = open_stream(served.url, headers={"Last-Event-ID": str(after)})
    assert [int(m.id) for m in by_header.events(4)] == [e.id for e in written[2:]]
    by_query = open_stream(served.url, params={"last_event_id": str(written[3].id)})
    assert [int(m.id) for m in by_query.events(2)] == [e.id for e in written[4:]]
    # EventSource's own reconnects send the header on the URL it first opened: the header wins.
    both = open_stream(served.url, params={"last_event_id": str(written[0].id)},
                       headers={"Last-Event-ID": str(written[4].id)})
    assert [int(m.id) for m in both.events(1)] == [written[5].id]
    r = httpx.get(served.url + "/api/events", headers={"Last-Event-ID": "x1"})
    assert r.status_code == 422


def test_a_client_that_drops_and_comes_back_after_a_restart_misses_nothing(
        serve_api, open_stream):
    api, served = serve_api()
    first = open_stream(served.url)
    lifecycle(api.ctx.db)
    seen = first.events(2)
    first.response.close()
    served.stop()  # the gateway goes away; the queue goes on
    lifecycle(api.ctx.db)
    written = written_after(api.ctx.db, int(seen[-1].id), 4 + 6)
    again, served_again = serve_api()  # a new replica: a context, a pool and a LISTEN of its own
    resumed = open_stream(served_again.url, headers={"Last-Event-ID": seen[-1].id})
    assert [int(m.id) for m in resumed.events(len(written))] == [e.id for e in written]


def test_heartbeats_keep_an_idle_stream_talking(serve_api, open_stream):
    api, served = serve_api(events_heartbeat_s=0.2)
    stream = open_stream(served.url)
    started = time.monotonic()
    beats = [stream.next() for _ in range(3)]
    assert all(m.comments == ["heartbeat"] and not m.event for m in beats)
    assert time.monotonic() - started < 3
    assert api.ctx.event_wake.streams == 1
    stream.response.close()  # the client goes away: its stream ends on the server too
    deadline = time.monotonic() + 5
    while api.ctx.event_wake.streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.ctx.event_wake.streams == 0


def test_streams_of_a_replica_share_one_look_at_the_outbox(serve_api, open_stream):
    # Heartbeats slower than the test: only the replica's look can wake the streams.
    api, served = serve_api(events_poll_s=0.1, events_heartbeat_s=30)
    streams = [open_stream(served.url) for _ in range(4)]
    wake, pool = api.ctx.event_wake, api.ctx.db.pool
    time.sleep(0.3)
    looks, requests = wake.looks, pool.get_stats()["requests_num"]
    time.sleep(1.0)  # idle: the replica looks about ten times; the streams ask nothing
    looked = wake.looks - looks
    assert 3 <= looked <= 15
    assert pool.get_stats()["requests_num"] - requests <= looked + 2
    started = time.monotonic()
    with api.ctx.db.connection() as conn:
        insert_media(conn)
    for s in streams:
        assert s.events(1)[0].event == "media.created"
    assert time.monotonic() - started < 5


def test_without_api_keys_the_stream_is_open_and_the_token_endpoint_answers(
        serve_api, open_stream):
    api, served = serve_api()
    r = httpx.post(served.url + "/api/events/token")
    assert r.status_code == 200 and r.json()["expires_at"] > time.time()
    open_stream(served.url)
    open_stream(served.url, params={"token": "anything"})


def test_a_key_or_a_token_opens_the_stream(serve_api, open_stream):
    api, served = serve_api(api_keys=[KEY], events_token_seconds=120)
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(served.url + "/api/events").status_code == 401
    assert httpx.post(served.url + "/api/events/token").status_code == 401
    open_stream(served.url, headers=auth)

    issued = httpx.post(served.url + "/api/events/token", headers=auth).json()
    assert time.time() + 100 < issued["expires_at"] <= time.time() + 121
    stream = open_stream(served.url, params={"token": issued["token"], "types": "media.*"})
    with api.ctx.db.connection() as conn:
        insert_media(conn)
    assert stream.events(1)[0].event == "media.created"

    expired, _ = api.ctx.event_tokens.issue(None, now=time.time() - 3600)
    subject, expires, signature = issued["token"].split(".")
    forged = f"{subject}.{int(expires) + 1000}.{signature}"
    other_key = f"{'0' * 32}.{expires}.{signature}"
    for bad in (expired, forged, other_key, "nonsense", "env.123.", f"env.{expires}.",
                f"{expires}.{signature}", "." + signature):
        r = httpx.get(served.url + "/api/events", params={"token": bad})
        assert r.status_code == 401, bad
        assert r.json()["error"]["code"] == "unauthorized"
    assert "expired" in httpx.get(served.url + "/api/events",
                                  params={"token": expired}).json()["error"]["message"]
    # The token opens the stream only.
    assert httpx.get(served.url + "/api/media", params={"token": issued["token"]}).status_code == 401
    # A file URL's signature is no token (nor is a token a file signature: another scope).
    file_expires, file_signature = api.ctx.signer.sign("originals/x", 60)
    r = httpx.get(served.url + "/api/events", params={"token": f"{file_expires}.{file_signature}"})
    assert r.status_code == 401


def test_a_token_ends_with_the_key_it_was_issued_for(serve_api, open_stream):
    api, served = serve_api(api_keys=[KEY], api_key_cache_s=0)
    ctx = api.ctx
    stored, secret = ctx.db.run(keys.create, ctx.key_secret, "viewer", ["read"])
    token = httpx.post(served.url + "/api/events/token",
                       headers={"Authorization": f"Bearer {secret}"}).json()["token"]
    assert token.startswith(stored.id.hex + ".")
    open_stream(served.url, params={"token": token}).response.close()
    ctx.db.run(keys.revoke, "viewer")
    refused = httpx.get(served.url + "/api/events", params={"token": token})
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]


def test_the_token_never_reaches_the_access_log(serve_api, open_stream, caplog):
    caplog.set_level(logging.INFO)
    api, served = serve_api(api_keys=[KEY], access_log=True)
    token = httpx.post(served.url + "/api/events/token",
                       headers={"Authorization": f"Bearer {KEY}"}).json()["token"]
    stream = open_stream(served.url, params={"token": token, "types": "media.*"})
    stream.response.close()
    httpx.get(served.url + "/api/events", params={"token": token + "0"})  # a refused one too
    deadline = time.monotonic() + 5
    while "[redacted]" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "token=[redacted]" in caplog.text  # the access log did write the requests
    assert token.split(".")[1] not in caplog.text


def test_every_event_type_is_documented_and_real_events_match_their_models(api):
    """Drives the queue through every change the SQL reports; each event validates against the
    model its type documents, which forbids fields it does not name."""
    doc = api.get("/openapi.json").json()
    assert set(doc["webhooks"]) == set(events.EVENT_TYPES)
    for type_ in events.EVENT_TYPES:
        schema = doc["webhooks"][type_]["post"]["requestBody"]["content"]["application/json"]
        assert schema["schema"]["$ref"].endswith(EVENT_MODELS[type_].__name__)
    stream_doc = doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["description"]
    assert all(t in stream_doc for t in events.EVENT_TYPES)

    db = api.ctx.db
    start = db.run(events.latest)
    lifecycle(db)  # created, queued, started, retrying, started, completed
    with db.connection() as conn:
        a = queue.enqueue(conn, insert_media(conn, "video", 10, duration=2.5).id, MODEL)
        b = queue.enqueue(conn, insert_media(conn, "photo", 20).id, MODEL)
    db.run(queue.cancel, b.id)
    (claimed,) = db.run(queue.claim_batch, 1, "w", 60, model_id=MODEL)
    db.run(queue.fail, claimed.lease, "not an image", retryable=False)
    db.run(queue.retry, a.id)  # item.queued with its previous status
    db.run(media.delete, b.media_id)
    db.run(queue.cancel, a.id)
    assert db.run(queue.report_if_drained, MODEL)  # one item left completed, one cancelled
    hook = db.run(webhooks.create, "https://example.com/hook", ["item.*"], "whsec_dGVzdHRlc3Q=")
    db.run(webhooks.send_test, hook.id)
    written = written_after(db, start, 6 + 4 + 1 + 2 + 1 + 1 + 1 + 1 + 1)
    assert {e.type for e in written} == set(events.EVENT_TYPES)
    for event in written:
        EVENT_MODELS[event.type].model_validate(body(event))
    queued = [e.data for e in written if e.type == "item.queued"]
    assert "previous_status" not in queued[0] and {"failed", "cancelled"} & {
        q.get("previous_status") for q in queued}


@pytest.mark.slow
@pytest.mark.parametrize("direct", [True, False], ids=["direct-ingress", "serve-proxy"])
def test_through_the_gateway_a_stream_resumes_across_a_restart_and_no_token_is_logged(
        direct, serve_port, database_url, tmp_path, open_stream, caplog):
    """The real gateway on Serve (its replica serving the port, or behind Serve's proxy): the
    stream flows through it, survives a redeploy by resuming, and its token is in no Ray log."""
    import ray
    from ray import serve

    from cluster.config.names import APP_NAME
    from db.connection import Database
    from serve_app.gateway import Gateway
    from devkit.system import system_settings

    caplog.set_level(logging.DEBUG)
    settings = system_settings(tmp_path / "home", database_url, serve_port, api_keys=[KEY],
                               gateway_replicas=1, gateway_direct_ingress=direct,
                               events_heartbeat_s=1.0, events_poll_s=0.5)
    base = f"http://127.0.0.1:{serve_port}"
    auth = {"Authorization": f"Bearer {KEY}"}

    def deploy() -> None:
        # The gateway alone: no depth deployment is needed to stream events.
        serve.run(Gateway.options(num_replicas=1).bind(None, settings), name=APP_NAME,
                  route_prefix="/")

    with Database(database_url, max_size=2) as db:
        deploy()
        try:
            token = httpx.post(base + "/api/events/token", headers=auth).json()["token"]
            stream = open_stream(base, params={"token": token, "types": "media.*,item.*"})
            lifecycle(db)
            seen = stream.events(3)
            assert [m.event for m in seen] == ["media.created", "item.queued", "item.started"]
            stream.response.close()  # three more of this lifecycle are left unread
            serve.delete(APP_NAME)
            lifecycle(db)  # while no gateway runs
            deploy()
            written = written_after(db, int(seen[-1].id), 3 + 6)
            resumed = open_stream(base, params={"token": token, "types": "media.*,item.*"},
                                  headers={"Last-Event-ID": seen[-1].id})
            assert [int(m.id) for m in resumed.events(len(written))] == [e.id for e in written]
            assert resumed.next().comments == ["heartbeat"]  # idle now: one within a second
            resumed.response.close()
        finally:
            serve.delete(APP_NAME)
    time.sleep(2)  # let Ray flush its logs to disk
    from pathlib import Path

    secret = token.split(".")[1]
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    for path in (p for p in logs.rglob("*") if p.is_file()):
        assert secret.encode() not in path.read_bytes(), f"the token is in {path}"
    assert secret not in caplog.text
