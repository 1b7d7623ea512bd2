"""A real S3 HTTP server on loopback (moto's), shared by a test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

from cluster.runtime import free_port


def use_test_credentials() -> None:
    """boto3 insists on credentials even for a local server. Set before Ray starts, so its
    workers inherit them as a cluster's nodes would their real ones."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


class MotoS3Server:
    """moto's server on a fixed port, which can be stopped and started again (an outage). Its
    buckets live in this process, so they survive the outage like a real server's disks."""

    def __init__(self) -> None:
        use_test_credentials()
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@contextmanager
def moto_s3_server() -> Iterator[str]:
    server = MotoS3Server()
    server.start()
    try:
        yield server.endpoint
    finally:
        server.stop()
