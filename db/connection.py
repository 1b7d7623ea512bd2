"""Connections: one psycopg pool per process, with lost connections retried and reported.

psycopg-pool replaces broken connections by itself (``check`` runs before a connection is lent,
reconnects back off exponentially). ``Database.run`` adds the other half: an operation that fails
because its connection died is retried on a fresh one, with backoff, and if the server stays away
the caller gets ``DatabaseUnavailable`` with a message that says so.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Concatenate, ParamSpec, Protocol, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class DatabaseUnavailable(RuntimeError):
    """Postgres could not be reached after retrying."""


class TransactionHook(Protocol):
    """Work that joins the transactions ``Database.run`` runs in its context (the API's audit
    log, which writes a request's entry in the transaction that makes its change)."""

    def before_commit(self, conn: psycopg.Connection) -> None: ...

    def committed(self) -> None: ...


transaction_hook: ContextVar[TransactionHook | None] = ContextVar("transaction_hook", default=None)


@contextmanager
def unhooked() -> Iterator[None]:
    """Transactions started in this block (and threads it starts) leave the hook out."""
    token = transaction_hook.set(None)
    try:
        yield
    finally:
        transaction_hook.reset(token)


def _is_connection_loss(exc: BaseException) -> bool:
    # OperationalError covers refused/closed connections and admin shutdowns; a query error on a
    # healthy connection (constraint, syntax) is a DatabaseError subclass that is not retried.
    return isinstance(exc, (psycopg.OperationalError, PoolTimeout)) and not isinstance(
        exc, psycopg.errors.QueryCanceled
    )


class Database:
    """A pool of connections to one Postgres server."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        retries: int = 5,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        timeout: float = 30.0,
        name: str = "depthmill",
    ) -> None:
        self.conninfo = conninfo
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"row_factory": dict_row},
            check=ConnectionPool.check_connection,
            timeout=timeout,
            reconnect_timeout=300.0,
            reconnect_failed=lambda pool: log.error(
                "database %s: gave up reconnecting after %.0fs", pool.name, pool.reconnect_timeout
            ),
            name=name,
            open=False,
        )

    def open(self, wait: bool = True, timeout: float = 30.0) -> Database:
        self.pool.open(wait=wait, timeout=timeout)
        return self

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Database:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; its block is one transaction, committed on a clean exit."""
        with self.pool.connection() as conn:
            yield conn

    def ping(self, timeout: float = 2.0) -> None:
        """One quick round trip, no retries: for health checks, which must answer promptly
        while the server is away rather than wait out the retries."""
        try:
            with self.pool.connection(timeout=timeout) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            if _is_connection_loss(exc):
                raise DatabaseUnavailable(f"database unreachable: {exc}") from exc
            raise

    def run(
        self,
        operation: Callable[Concatenate[psycopg.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``operation(conn, ...)`` in one transaction, retrying if the connection is lost.

        Operations passed here must be safe to repeat: the queue's are (enqueue is idempotent,
        completion is fenced by the lease, a repeated claim only leases items that expire back).
        """
        hook = transaction_hook.get()
        for attempt in range(1, self.retries + 2):
            try:
                with self.pool.connection() as conn:
                    result = operation(conn, *args, **kwargs)
                    if hook is not None:
                        hook.before_commit(conn)
                if hook is not None:
                    hook.committed()
                return result
            except Exception as exc:
                if not _is_connection_loss(exc):
                    raise
                if attempt > self.retries:
                    raise DatabaseUnavailable(
                        f"database unreachable after {attempt} attempts "
                        f"({getattr(operation, '__name__', 'operation')}): {exc}"
                    ) from exc
                delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2
                log.warning(
                    "database connection lost during %s (attempt %d/%d): %s; retrying in %.2fs",
                    getattr(operation, "__name__", "operation"),
                    attempt,
                    self.retries + 1,
                    str(exc).strip() or type(exc).__name__,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")
