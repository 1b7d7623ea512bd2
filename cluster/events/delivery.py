"""The webhook deliverer: a named, detached, async Ray actor that sends what the outbox fans out.

It wakes on NOTIFY ``depthmill_webhooks`` (the fan-out trigger sends it in the transaction that
wrote the deliveries) with polling as the fallback, claims due deliveries (at most one per endpoint, so
endpoints are served concurrently and each in order), signs and POSTs them through the guarded
transport, and records each outcome fenced by its lease. Leases are short and heartbeated: a
deliverer killed mid-send loses nothing, its deliveries are claimed again once their leases run
out (at least once; the webhook-id is the event's, so receivers deduplicate). Now and then it
prunes events past their retention.

All state lives in Postgres, like the scheduler's: a restarted deliverer simply carries on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpcore
import ray

from cluster.config.names import NAMESPACE, WEBHOOK_ACTOR
from cluster.config.settings import Settings
from cluster.config.worker_env import FOREGROUND_RUNTIME_ENV
from cluster.events import schedule, signing
from cluster.events.addresses import UnsafeDestination
from cluster.events.transport import AsyncResolver, Sender, resolve_async
from db import webhooks
from db.connection import Database
from db.listen import wake_on_notify
from db.events import NOTIFY_CHANNEL
from db.webhooks import ClaimedDelivery, Outcome

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 600.0


class Deliverer:
    def __init__(self, settings: Settings, *, resolver: AsyncResolver = resolve_async,
                 autostart: bool = True) -> None:
        self.settings = settings
        self.owner = f"webhooks-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.db = Database(settings.database_url, max_size=4, name="webhooks").open()
        self.sender = Sender(allow_private=settings.webhook_allow_private,
                             timeout_s=settings.webhook_timeout_s,
                             max_body=webhooks.RESPONSE_BODY_CHARS, resolver=resolver)
        self.in_flight: dict[int, ClaimedDelivery] = {}
        self.counts = {"claimed": 0, "delivered": 0, "retried": 0, "failed": 0, "lost": 0,
                       "pruned": 0}
        self.last_error: str | None = None
        self.wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._sends: set[asyncio.Task] = set()  # held strongly: the loop keeps tasks weakly
        self._started = False
        self._stopping = False
        if autostart:
            # As a Ray async actor: start at once, so an actor Ray restarts goes back to work.
            try:
                asyncio.get_running_loop().create_task(self.start())
            except RuntimeError:
                pass

    async def start(self) -> dict:
        if not self._started:
            self._started, self._stopping = True, False
            for loop in (self._claim_loop, self._heartbeat_loop, self._listen_loop,
                         self._prune_loop):
                self._tasks.append(asyncio.create_task(loop()))
        self.wake.set()
        return await self.status()

    async def status(self) -> dict[str, Any]:
        return {"running": self._started, "owner": self.owner, "in_flight": len(self.in_flight),
                "max_in_flight": self.settings.webhook_max_in_flight, "counts": dict(self.counts),
                "last_error": self.last_error}

    async def shutdown(self) -> None:
        """Stop claiming and sending; what was in flight expires back and is sent again."""
        # The flag as well as the cancel: on Python 3.11, wait_for loses a cancel that lands as
        # its wait ends (the wake event set at that moment), and the claim loop would go on.
        self._stopping = True
        self.wake.set()
        for t in [*self._tasks, *self._sends]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._sends, return_exceptions=True)
        self._tasks, self._started = [], False
        await self.sender.close()
        await asyncio.to_thread(self.db.close)

    # ----------------------------------------------------------------------------- the loops

    async def _claim_loop(self) -> None:
        while not self._stopping:
            timeout = self.settings.webhook_poll_s
            try:
                free = self.settings.webhook_max_in_flight - len(self.in_flight)
                claimed = await asyncio.to_thread(
                    self.db.run, webhooks.claim, free, self.owner, self.settings.webhook_lease_s)
                for delivery in claimed:
                    self._send_later(delivery)
                self.counts["claimed"] += len(claimed)
                # All slots busy: a send that ends wakes the loop; no need to look sooner.
                due = (await asyncio.to_thread(self.db.run, webhooks.due_at)
                       if len(self.in_flight) < self.settings.webhook_max_in_flight else None)
                if due is not None:
                    wait = (due - datetime.now(UTC)).total_seconds()
                    timeout = min(timeout, max(wait, 0.05))
                self.last_error = None
            except Exception as e:  # the loop must survive a database outage
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("webhook deliverer: %s", self.last_error)
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass
            self.wake.clear()

    def _send_later(self, delivery: ClaimedDelivery) -> None:
        self.in_flight[delivery.id] = delivery
        task = asyncio.create_task(self._deliver(delivery))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _deliver(self, d: ClaimedDelivery | None) -> None:
        """Send ``d``, then each delivery of the same endpoint that its recording leased."""
        try:
            while d is not None:
                outcome = await self._attempt(d)
                recorded, following = await self._record(d, outcome)
                key = {"delivered": "delivered", "retry": "retried", "failed": "failed"}[
                    outcome.kind]
                self.counts[key if recorded else "lost"] += 1
                if outcome.kind != "delivered":
                    log.info("webhook %s delivery %d attempt %d: %s", d.webhook_id, d.id,
                             d.attempt, outcome.error)
                self.in_flight.pop(d.id, None)
                if following is not None:
                    self.in_flight[following.id] = following
                    self.counts["claimed"] += 1
                d = following
        finally:
            if d is not None:
                self.in_flight.pop(d.id, None)
            self.wake.set()

    async def _attempt(self, d: ClaimedDelivery) -> Outcome:
        msg_id = signing.message_id(d.event_id)
        payload = signing.body(d.event_type, d.event_created_at, d.event_data)
        headers = signing.headers(d.secret, msg_id, int(time.time()), payload)
        plan = self.settings.webhook_retry_schedule_s
        started = time.monotonic()
        try:
            response = await self.sender.post(d.url, headers, payload)
        except UnsafeDestination as e:
            return Outcome("failed", error=str(e))
        except (TimeoutError, httpcore.TimeoutException) as e:
            return schedule.after_failure(plan, d.attempt, error=f"timed out: {type(e).__name__}",
                                          latency_ms=(time.monotonic() - started) * 1000)
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as e:
            return schedule.after_failure(plan, d.attempt,
                                          error=f"connection failed: {type(e).__name__}: {e}"[:500],
                                          latency_ms=(time.monotonic() - started) * 1000)
        except httpcore.UnsupportedProtocol as e:
            return Outcome("failed", error=f"unsupported URL: {e}")
        except Exception as e:  # noqa: BLE001 - recorded, so a bug cannot loop a delivery forever
            log.exception("webhook %s delivery %d: unexpected error", d.webhook_id, d.id)
            return schedule.after_failure(plan, d.attempt,
                                          error=f"unexpected error: {type(e).__name__}: {e}"[:500])
        return schedule.of_response(plan, d.attempt, response.status, response.body,
                                    response.headers, response.latency_ms)

    async def _record(self, d: ClaimedDelivery, outcome: Outcome
                      ) -> tuple[bool, ClaimedDelivery | None]:
        """Retried while the database is away: an outcome not recorded would be sent again
        after the lease expires, which is allowed (at least once) but worth avoiding."""
        for attempt in range(5):
            try:
                return await asyncio.to_thread(
                    self.db.run, webhooks.record_and_claim_next, d, outcome,
                    disable_after_s=self.settings.webhook_disable_after_s,
                    lease_s=self.settings.webhook_lease_s)
            except Exception as e:
                self.last_error = f"record: {type(e).__name__}: {e}"
                await asyncio.sleep(min(2 ** attempt, 10))
        return False, None

    async def _heartbeat_loop(self) -> None:
        interval = max(self.settings.webhook_lease_s / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            held = list(self.in_flight.values())
            if not held:
                continue
            try:
                await asyncio.to_thread(self.db.run, webhooks.extend_leases, held,
                                        self.settings.webhook_lease_s)
            except Exception as e:
                self.last_error = f"heartbeat: {type(e).__name__}: {e}"

    async def _listen_loop(self) -> None:
        await wake_on_notify(self.settings.database_url, NOTIFY_CHANNEL, self.wake)

    async def _prune_loop(self) -> None:
        while True:
            try:
                while True:
                    n = await asyncio.to_thread(self.db.run, webhooks.prune_events,
                                                self.settings.events_retention_s)
                    self.counts["pruned"] += n
                    if n < 1000:
                        break
            except Exception as e:
                self.last_error = f"prune: {type(e).__name__}: {e}"
            await asyncio.sleep(PRUNE_EVERY_S)


DelivererActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1,
                            runtime_env=FOREGROUND_RUNTIME_ENV)(Deliverer)


def get_or_start_deliverer(settings: Settings):
    """The cluster's one webhook deliverer (named, detached): created if missing, then started."""
    handle = DelivererActor.options(
        name=WEBHOOK_ACTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(settings)
    ray.get(handle.start.remote())
    return handle


def get_deliverer():
    """The running deliverer's handle, or None."""
    try:
        return ray.get_actor(WEBHOOK_ACTOR, namespace=NAMESPACE)
    except ValueError:
        return None
