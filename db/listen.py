"""Waking on NOTIFY: the scheduler and the webhook deliverer both sleep until Postgres says there
is work, and poll as the fallback while the LISTEN connection is away."""

from __future__ import annotations

import asyncio
import logging

import psycopg

log = logging.getLogger(__name__)


async def wake_on_notify(database_url: str, channel: str, wake: asyncio.Event,
                         *, retry_s: float = 5.0) -> None:
    """Set ``wake`` on every notification on ``channel``, and once on each (re)connect for what
    came while not listening; runs until cancelled, reconnecting after any trouble."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {channel}")
                wake.set()
                async for _ in conn.notifies():
                    wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.info("LISTEN %s connection lost (%s); polling until it is back", channel, e)
            await asyncio.sleep(retry_s)
