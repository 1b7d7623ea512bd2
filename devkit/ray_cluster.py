"""One real local Ray cluster (and one Serve instance) per test session."""

from __future__ import annotations

import ray
from ray import serve

from cluster.runtime import free_port, use_node_env
from devkit.s3 import use_test_credentials


def start_local_cluster(num_cpus: int = 8) -> None:
    # As `depthmill up` starts a node; among it, token auth off (it switches itself on when
    # ~/.ray/auth_token exists).
    use_node_env()
    use_test_credentials()
    # Logical CPUs: more than the 2 cores of CI so fractional replicas and tasks all fit.
    # address="local": always a fresh cluster of our own, never one a `ray start` left running.
    ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False, namespace="depthmill-tests",
        log_to_driver=False, configure_logging=False,
    )


def start_serve() -> int:
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


def stop() -> None:
    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
