"""What wakes a replica's /api/events streams: one LISTEN connection per replica, shared.

A stream never holds a connection of its own while it waits: it waits here, then reads its next
events through the replica's pool. The LISTEN connection lives in a thread, so the streams may
wait on any event loop (Serve's replica loop; each TestClient's loop of its own in tests): a
NOTIFY bumps a counter and resolves every waiter's future on that waiter's loop.

A NOTIFY is a hint, not the truth: the outbox is. An event can become readable without one (an
older transaction that wrote no event ends, letting a held-back event through), and while the
connection is down there are none, so a waiter never waits longer than it is told to (the poll).
"""

from __future__ import annotations

import asyncio
import logging
import threading

import psycopg

from db import events

log = logging.getLogger(__name__)

# How often the listening thread looks up from the connection to see whether it should stop.
_CHECK_S = 1.0
_RECONNECT_S = 2.0


class EventWake:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = set()
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.listening = False  # the LISTEN connection is up (else waiters only poll)
        self.streams = 0  # open /api/events streams of this replica (the route counts them)

    @property
    def generation(self) -> int:
        """Bumped by every NOTIFY (and every reconnect): a stream notes it before reading, and
        ``wait`` returns at once if it moved meanwhile, so no wake-up falls between the two."""
        return self._generation

    def start(self) -> None:
        """Started by the first stream: a replica nobody subscribes to opens no connection."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._listen, name="events-listen",
                                                daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_CHECK_S * 3)
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

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    events.listen(conn)
                    self.listening = True
                    self._wake()  # whatever committed while it was down
                    while not self._stop.is_set():
                        woke = False
                        for _ in conn.notifies(timeout=_CHECK_S):
                            woke = True
                            break  # one wake for a burst; the rest are read in the same read
                        if woke:
                            self._wake()
            except Exception as e:
                if self.listening:
                    log.info("events LISTEN connection lost (%s); streams poll until it is back",
                             type(e).__name__)
                self.listening = False
                self._stop.wait(_RECONNECT_S)
        self.listening = False


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
