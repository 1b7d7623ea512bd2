"""The HTTP client the deliverer sends with: httpcore, with the address policy at connect time.

``GuardedBackend`` is an httpcore network backend whose ``connect_tcp`` resolves the host itself,
checks every address it gets (one forbidden address refuses the host: DNS answers rotate), and
connects to an allowed IP. The URL keeps the hostname, so the Host header, TLS SNI and certificate
verification are the hostname's. Checking after resolving, on the address connected to, is what
closes DNS rebinding: a name that resolved to a public address at registration and to 127.0.0.1
now is refused now. No redirects are followed (httpcore never follows any).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpcore

from cluster.events.addresses import UnsafeDestination, refusal, resolve

AsyncResolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_async(host: str, port: int) -> list[str]:
    return await asyncio.to_thread(resolve, host, port)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, *, allow_private: bool, resolver: AsyncResolver = resolve_async,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None,
                          socket_options=None):
        addresses = await self.resolver(host, port)
        if not addresses:
            raise UnsafeDestination(f"the host {host!r} does not resolve")
        for address in addresses:
            if reason := refusal(address, allow_private=self.allow_private):
                raise UnsafeDestination(f"refused: {host} resolves to a forbidden address: {reason}")
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout,
                                                    local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as e:
                last = e
        raise last  # type: ignore[misc]

    async def connect_unix_socket(self, *args, **kwargs):
        raise UnsafeDestination("webhooks go over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: str  # the first ``max_body`` bytes, decoded leniently
    latency_ms: float


class Sender:
    """POSTs with a connection pool whose every connection went through ``GuardedBackend``."""

    def __init__(self, *, allow_private: bool, timeout_s: float = 10.0, max_body: int = 4096,
                 resolver: AsyncResolver = resolve_async,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.timeout_s = timeout_s
        self.max_body = max_body
        self.backend = GuardedBackend(allow_private=allow_private, resolver=resolver, inner=inner)
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(), network_backend=self.backend,
            max_connections=64, keepalive_expiry=30)

    async def post(self, url: str, headers: dict[str, str], content: bytes) -> Response:
        started = time.monotonic()
        t = self.timeout_s
        extensions = {"timeout": {"connect": t, "read": t, "write": t, "pool": t}}
        async with asyncio.timeout(t):
            async with self.pool.stream("POST", url, headers=list(headers.items()),
                                        content=content, extensions=extensions) as response:
                kept = bytearray()
                async for chunk in response.aiter_stream():
                    kept += chunk
                    if len(kept) >= self.max_body:
                        break
                return Response(
                    status=response.status,
                    headers={k.decode().lower(): v.decode(errors="replace")
                             for k, v in response.headers},
                    body=bytes(kept[: self.max_body]).decode(errors="replace"),
                    latency_ms=(time.monotonic() - started) * 1000)

    async def close(self) -> None:
        await self.pool.aclose()
