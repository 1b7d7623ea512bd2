"""Finding the Ray cluster to join."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from ray._private import services

from cluster.runtime import cluster_address, free_port


@pytest.fixture
def no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Ray prefers a GCS process it finds running on this machine (`ps`) to the address file;
    # the test session's own cluster is one. Here only the file is in question.
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: frozenset())


def test_a_stale_cluster_address_is_not_joined(tmp_path, no_ray_address):
    # What a crash or a reboot leaves behind: `ray.init("auto")` would wait minutes on it.
    (tmp_path / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    assert cluster_address(str(tmp_path)) is None


@contextmanager
def listening() -> Iterator[str]:
    """A port that accepts connections, standing in for a live GCS."""
    with socket.socket() as gcs:
        gcs.bind(("127.0.0.1", 0))
        gcs.listen()
        yield f"127.0.0.1:{gcs.getsockname()[1]}"


def test_a_cluster_that_answers_is_joined(tmp_path, no_ray_address):
    with listening() as address:
        (tmp_path / "ray_current_cluster").write_text(address)
        assert cluster_address(str(tmp_path)) == address


def test_ray_address_wins_over_the_local_file(tmp_path, no_ray_address, monkeypatch):
    with listening() as address:
        monkeypatch.setenv("RAY_ADDRESS", address)
        (tmp_path / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
        assert cluster_address(str(tmp_path)) == address
