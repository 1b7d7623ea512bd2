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


def test_ray_shutdown_chatter_stays_off_the_terminal(tmp_path, monkeypatch, capfd):
    import logging
    import os

    import ray
    from ray import serve

    from cluster import runtime
    from cluster.config.settings import Settings

    def chatty(name):
        def shutdown():
            logging.getLogger("ray.serve").info("%s: shutting down", name)
            logging.getLogger("ray.serve").warning("%s: still shutting down", name)
            os.write(2, f"[core_worker.cc] {name} exiting\n".encode())
        return shutdown

    monkeypatch.setattr(runtime, "connect_ray", lambda settings, start=True: False)
    monkeypatch.setattr(runtime, "get_scheduler", lambda: None)
    monkeypatch.setattr(serve, "shutdown", chatty("serve"))
    monkeypatch.setattr(ray, "shutdown", chatty("ray"))
    handler = logging.StreamHandler()  # Serve's own handler, writing to the terminal
    logging.getLogger("ray.serve").addHandler(handler)
    try:
        done = runtime.down(Settings(home=tmp_path, database_url="postgresql://unused/x"))
    finally:
        logging.getLogger("ray.serve").removeHandler(handler)
    assert done == ["Serve application removed"]
    out, err = capfd.readouterr()
    assert "shutting down" not in out + err and "exiting" not in out + err
    os.write(2, b"stderr works again\n")
    assert "stderr works again" in capfd.readouterr().err
