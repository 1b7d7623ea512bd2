"""What wakes a replica's /api/events streams: one look at the outbox per replica, shared.

The outbox sends no NOTIFY for the stream (migration 013: a NOTIFY holds a server-wide lock
through its transaction's commit, which would queue the claimers' commits one behind the other).
So one thread per replica looks instead, every ``interval_s`` while any stream is open: at
``db.events.latest``, the newest event a reader can take. It moves whenever the readable set
grows, also when an older transaction that wrote no event ends and lets held-back events through,
so a stream woken by it never waits on a look that would not come. A stream never holds a
connection of its own: woken, it reads its next events through the replica's pool.

The looking thread resolves each waiter's future on that waiter's own loop, so streams may wait
on any event loop (Serve's replica loop; each TestClient's loop of its own in tests).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from db import events
from db.connection import Database

log = logging.getLogger(__name__)


class EventWake:
    def __init__(self, db: Database, interval_s: float) -> None:
        self._db, self.interval_s = db, interval_s
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = set()
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failing = False
        self.streams = 0  # open /api/events streams of this replica (the route counts them)
        self.looks = 0  # looks at the outbox so far

    @property
    def generation(self) -> int:
        """Bumped each time the outbox's readable end moves: a stream notes it before reading,
        and ``wait`` returns at once if it moved meanwhile, so no wake-up falls between the two."""
        return self._generation

    def start(self) -> None:
        """Started by the first stream: a replica nobody subscribes to never looks."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._look, name="events-look",
                                                daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval_s + 5)
        self._wake()

    async def wait(self, seen: int, timeout: float) -> None:
        """Until the generation moves past ``seen`` or ``timeout`` seconds pass."""
        self.start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        waiter = (loop, future)
        with self._lock:
            if self._generation != seen:
                return
            self._waiters.add(waiter)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def _wake(self) -> None:
        with self._lock:
            self._generation += 1
            waiters, self._waiters = self._waiters, set()
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # that loop is closed: its stream is gone

    def _look(self) -> None:
        last: int | None = None
        while not self._stop.wait(self.interval_s):
            if not self.streams and not self._waiters:
                continue
            try:
                newest = self._db.run(events.latest)
                self.looks += 1
            except Exception as e:
                if not self._failing:
                    log.warning("events: cannot look at the outbox (%s); streams wait",
                                type(e).__name__)
                self._failing = True
                continue
            self._failing = False
            if newest != last:
                last = newest
                self._wake()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
