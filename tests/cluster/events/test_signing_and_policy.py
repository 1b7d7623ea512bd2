"""Signing checked by an independent receiver (the standardwebhooks package), the address
policy for every forbidden class, and the retry schedule's reading of answers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from cluster.events import schedule, signing
from cluster.events.addresses import UnsafeDestination, check_url, refusal


def test_signatures_verify_with_standardwebhooks():
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and 24 <= len(base64.b64decode(secret[6:])) <= 32
    body = signing.body("item.completed", datetime.now(UTC), {"item_id": "x", "n": 1})
    headers = signing.headers(secret, signing.message_id(7), int(datetime.now().timestamp()), body)
    assert headers["webhook-id"] == "evt_7"
    got = Webhook(secret).verify(body, headers)
    assert got["type"] == "item.completed" and got["data"] == {"item_id": "x", "n": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)


@pytest.mark.parametrize("address, what", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "reserved"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:10.0.0.1", "private"), ("64:ff9b::a00:1", "private"),
])
def test_every_forbidden_class_is_refused(address, what):
    reason = refusal(address)
    assert reason and what in reason
    with pytest.raises(UnsafeDestination, match="refused"):
        check_url(f"http://[{address}]/x" if ":" in address else f"http://{address}/x")


def test_public_addresses_pass_and_metadata_stays_closed_when_private_is_allowed():
    assert refusal("93.184.216.34") is None and refusal("2606:4700::1111") is None
    assert refusal("10.0.0.1", allow_private=True) is None
    assert "metadata" in refusal("169.254.169.254", allow_private=True)
    assert "metadata" in refusal("::ffff:169.254.169.254", allow_private=True)


def test_a_hostname_is_checked_by_what_it_resolves_to():
    def resolver(host, port):
        return {"good.example": ["93.184.216.34"],
                "sneaky.example": ["93.184.216.34", "127.0.0.1"]}[host]

    check_url("https://good.example/x", resolver=resolver)
    with pytest.raises(UnsafeDestination, match="sneaky.example resolves to a forbidden"):
        check_url("https://sneaky.example/x", resolver=resolver)

    def nowhere(host, port):
        raise OSError("no such host")

    with pytest.raises(UnsafeDestination, match="does not resolve"):
        check_url("https://nowhere.example/x", resolver=nowhere)
    for bad in ("ftp://x.example/", "http:///nohost", "http://user:pw@x.example/"):
        with pytest.raises(UnsafeDestination):
            check_url(bad, resolver=resolver)


SCHEDULE = [0, 5, 300]


def test_what_each_answer_means():
    assert schedule.of_response(SCHEDULE, 1, 204, "", {}, 1.0).kind == "delivered"
    retry = schedule.of_response(SCHEDULE, 1, 503, "", {}, 1.0)
    assert retry.kind == "retry" and retry.retry_in_s == 5
    assert schedule.of_response(SCHEDULE, 2, 429, "", {}, 1.0).retry_in_s == 300
    assert schedule.of_response(SCHEDULE, 3, 500, "", {}, 1.0).kind == "failed"
    gone = schedule.of_response(SCHEDULE, 1, 410, "", {}, 1.0)
    assert gone.kind == "failed" and gone.disable
    for status in (400, 401, 404, 301):
        assert schedule.of_response(SCHEDULE, 1, status, "", {}, 1.0).kind == "failed"


def test_retry_after_is_at_least_the_schedule_and_capped():
    assert schedule.of_response(SCHEDULE, 1, 429, "", {"retry-after": "60"}, 1).retry_in_s == 60
    assert schedule.of_response(SCHEDULE, 1, 429, "", {"retry-after": "1"}, 1).retry_in_s == 5
    assert schedule.of_response(SCHEDULE, 1, 503, "", {"retry-after": "99999999"},
                                1).retry_in_s == schedule.RETRY_AFTER_MAX_S
    now = datetime(2026, 1, 1, tzinfo=UTC)
    date = (now + timedelta(seconds=120)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert schedule.retry_after_s(date, now) == 120
    assert schedule.retry_after_s("soon") is None
