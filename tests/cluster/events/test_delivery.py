"""The deliverer in-process (its event loop, no Ray) against real receivers on loopback: signed
deliveries, a receiver down for a while, 410, Retry-After, disabling, connect-time refusal,
and no secret in the logs. Loopback is private, so these allow private destinations, except the
refusal test, which asserts nothing ever connects."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import httpcore
import pytest

from cluster.config.settings import Settings
from cluster.events import signing
from cluster.events.delivery import Deliverer
from cluster.events.transport import Sender
from db import events, webhooks
from devkit.webhook_receiver import Receiver

FAST = [0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]


def settings(database_url, tmp_path, **overrides) -> Settings:
    base = dict(home=tmp_path, database_url=database_url, webhook_allow_private=True,
                webhook_retry_schedule_s=FAST, webhook_poll_s=0.2, webhook_lease_s=5,
                webhook_timeout_s=2)
    return Settings(**{**base, **overrides})


def add_hook(db, url, patterns=("item.*",)) -> tuple[webhooks.Webhook, str]:
    secret = signing.new_secret()
    return db.run(webhooks.create, url, list(patterns), secret), secret


async def until(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting")


def run(s: Settings, scenario, **kwargs):
    async def main():
        d = Deliverer(s, autostart=False, **kwargs)
        await d.start()
        try:
            return await scenario(d)
        finally:
            await d.shutdown()
    return asyncio.run(main())


def deliveries(db, hook_id):
    return db.run(webhooks.list_deliveries, hook_id).items


def test_signed_deliveries_in_order_verified_by_standardwebhooks(db, database_url, tmp_path):
    with Receiver() as rx:
        hook, secret = add_hook(db, rx.url)
        ids = [db.run(events.emit, "item.completed", {"n": i}) for i in range(3)]
        db.run(events.emit, "media.created", {})  # not subscribed

        async def scenario(d):
            await until(lambda: len(rx.received) == 3)
            await until(lambda: all(x.status == "delivered" for x in deliveries(db, hook.id)))

        run(settings(database_url, tmp_path), scenario)
        got = rx.verified(secret)
        assert [g["data"]["n"] for g in got] == [0, 1, 2]
        assert rx.ids() == [f"evt_{i}" for i in ids]
        done = deliveries(db, hook.id)
        assert {x.response_status for x in done} == {200} and all(x.latency_ms for x in done)


def test_a_receiver_down_for_a_while_gets_everything_with_its_original_ids(db, database_url,
                                                                           tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook, secret = add_hook(db, f"http://127.0.0.1:{port}/hook")
    ids = [db.run(events.emit, "item.failed", {"n": i}) for i in range(3)]
    state = {"rx": None, "unavailable": 2}

    def answer(r):
        if state["unavailable"]:
            state["unavailable"] -= 1
            return 503, {}, b"down for maintenance"
        return 200, {}, b"ok"

    async def scenario(d):
        # Refused connections first: the first delivery retries, nothing is lost.
        await until(lambda: any(x.attempts >= 2 for x in deliveries(db, hook.id)))
        assert any("connection failed" in (x.last_error or "") for x in deliveries(db, hook.id))
        state["rx"] = Receiver(port, answer)
        await until(lambda: all(x.status == "delivered" for x in deliveries(db, hook.id)))

    try:
        run(settings(database_url, tmp_path), scenario)
        rx = state["rx"]
        delivered = {r.headers["webhook-id"] for r in rx.received}
        assert delivered == {f"evt_{i}" for i in ids}
        rx.verified(secret)
        assert db.run(webhooks.get, hook.id).failing_since is None  # a 2xx reset it
    finally:
        if state["rx"]:
            state["rx"].close()


def test_410_disables_the_endpoint(db, database_url, tmp_path):
    with Receiver(answer=lambda r: (410, {}, b"gone")) as rx:
        hook, _ = add_hook(db, rx.url)
        db.run(events.emit, "item.failed", {})
        db.run(events.emit, "item.failed", {})

        async def scenario(d):
            await until(lambda: not db.run(webhooks.get, hook.id).enabled)
            await asyncio.sleep(0.5)

        run(settings(database_url, tmp_path), scenario)
        assert len(rx.received) == 1  # the second waits for the endpoint to be enabled again
        got = db.run(webhooks.get, hook.id)
        assert "410" in got.disabled_reason
        assert [x.status for x in deliveries(db, hook.id)] == ["pending", "failed"]


def test_retry_after_is_honoured(db, database_url, tmp_path):
    answers = iter([(429, {"Retry-After": "1"}, b"slow down"), (200, {}, b"ok")])
    with Receiver(answer=lambda r: next(answers)) as rx:
        hook, _ = add_hook(db, rx.url)
        db.run(events.emit, "item.completed", {})

        async def scenario(d):
            await until(lambda: len(rx.received) == 2)

        run(settings(database_url, tmp_path), scenario)
        assert rx.received[1].at - rx.received[0].at >= 0.9
        assert rx.ids()[0] == rx.ids()[1]


def test_disabled_after_failing_long_enough(db, database_url, tmp_path):
    with Receiver(answer=lambda r: (500, {}, b"x" * 100_000)) as rx:
        hook, _ = add_hook(db, rx.url)
        db.run(events.emit, "item.completed", {})

        async def scenario(d):
            await until(lambda: not db.run(webhooks.get, hook.id).enabled)

        run(settings(database_url, tmp_path, webhook_disable_after_s=0.5), scenario)
        got = db.run(webhooks.get, hook.id)
        assert "every delivery failed since" in got.disabled_reason
        (x,) = deliveries(db, hook.id)
        assert x.response_status == 500 and len(x.response_body) <= webhooks.RESPONSE_BODY_CHARS
        assert len(rx.received) >= 2


def test_the_schedule_runs_out_then_failed_for_good(db, database_url, tmp_path):
    with Receiver(answer=lambda r: (503, {}, b"")) as rx:
        hook, _ = add_hook(db, rx.url)
        db.run(events.emit, "item.completed", {})

        async def scenario(d):
            await until(lambda: deliveries(db, hook.id)[0].status == "failed")

        run(settings(database_url, tmp_path, webhook_retry_schedule_s=[0, 0.1, 0.1]), scenario)
        assert len(rx.received) == 3
        assert "gave up after 3 attempts" in deliveries(db, hook.id)[0].last_error


class CountingBackend(httpcore.AnyIOBackend):
    def __init__(self):
        self.connects = 0

    async def connect_tcp(self, *args, **kwargs):
        self.connects += 1
        return await super().connect_tcp(*args, **kwargs)


def test_a_hostname_resolving_to_loopback_is_refused_before_connecting(db, database_url, tmp_path):
    async def to_loopback(host, port):
        return ["127.0.0.1"]

    with Receiver() as rx:
        inner = CountingBackend()

        connects_before = None

        async def both():
            nonlocal connects_before
            sender = Sender(allow_private=False, resolver=to_loopback, inner=inner)
            with pytest.raises(Exception, match="resolves to a forbidden address"):
                await sender.post(f"http://hooks.example:{rx.port}/hook", {}, b"{}")
            await sender.close()
            connects_before = (inner.connects, rx.connections)
            allowed = Sender(allow_private=True, resolver=to_loopback, inner=inner)
            r = await allowed.post(f"http://hooks.example:{rx.port}/hook", {}, b"{}")
            await allowed.close()
            return r

        r = asyncio.run(both())
        assert connects_before == (0, 0)  # refused: no connection was ever attempted
        assert r.status == 200 and rx.received[0].headers["host"] == f"hooks.example:{rx.port}"

        # And through the deliverer: the delivery fails for good, the receiver sees nothing.
        hook, _ = add_hook(db, f"http://hooks.example:{rx.port}/hook")
        db.run(events.emit, "item.completed", {})

        async def scenario(d):
            await until(lambda: deliveries(db, hook.id)[0].status == "failed")

        seen = rx.connections
        run(settings(database_url, tmp_path, webhook_allow_private=False), scenario,
            resolver=to_loopback)
        assert rx.connections == seen
        assert "forbidden address" in deliveries(db, hook.id)[0].last_error


def test_no_secret_in_the_logs(db, database_url, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with Receiver(answer=lambda r: (500, {}, b"no")) as rx:
        hook, secret = add_hook(db, rx.url)
        db.run(events.emit, "item.completed", {})

        async def scenario(d):
            await until(lambda: len(rx.received) >= 2)

        run(settings(database_url, tmp_path), scenario)
    text = caplog.text
    assert "delivery" in text  # the failures were logged
    assert secret not in text and secret[6:] not in text


@pytest.mark.parametrize("address", [
    "127.0.0.1", "::1", "10.0.0.1", "192.168.0.1", "172.16.5.4", "fd12::1", "169.254.10.10",
    "fe80::1", "100.64.1.1", "0.0.0.0", "224.0.0.251", "240.0.0.1", "169.254.169.254",
    "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
])
def test_connect_time_refuses_every_forbidden_class_without_connecting(address):
    async def resolver(host, port):
        return ["93.184.216.34", address]  # one bad answer among good ones refuses the host

    inner = CountingBackend()

    async def attempt():
        sender = Sender(allow_private=False, resolver=resolver, inner=inner)
        try:
            with pytest.raises(Exception, match="forbidden address"):
                await sender.post("https://hooks.example/x", {}, b"{}")
        finally:
            await sender.close()

    asyncio.run(attempt())
    assert inner.connects == 0
