"""A real webhook receiver on loopback, in a thread: records what arrives, answers as told."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


# An answer: (status, headers, body); or call ``hang`` to never answer in time.
Answer = tuple[int, dict[str, str], bytes]


class Receiver:
    def __init__(self, port: int = 0,
                 answer: Callable[[Received], Answer] = lambda r: (200, {}, b"ok")) -> None:
        self.received: list[Received] = []
        self.connections = 0
        self.answer = answer
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self):
                outer.connections += 1
                super().setup()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                got = Received({k.lower(): v for k, v in self.headers.items()}, body,
                               time.monotonic())
                outer.received.append(got)
                status, headers, reply = outer.answer(got)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def verified(self, secret: str) -> list[dict]:
        """Every body received, each checked by the standardwebhooks package (raises if not)."""
        return [Webhook(secret).verify(r.body, r.headers) for r in self.received]

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
