"""Processing tasks calling the depth deployment."""

from __future__ import annotations

import time

import pytest
import ray
from ray import serve

from cluster.work.tasks import serve_depth
from cluster.config.names import DEPTH_DEPLOYMENT

pytestmark = pytest.mark.slow

APP = "depth-that-reports-cpus"


@serve.deployment(name=DEPTH_DEPLOYMENT, ray_actor_options={"num_cpus": 0})
class FreeCpusWhileCalled:
    """Stands in for the depth model: answers after a while with the CPUs Ray then has free,
    while the caller is still waiting."""

    def __call__(self, image, size) -> float:
        time.sleep(1.5)  # longer than Ray takes to publish a change in free resources
        return ray.available_resources().get("CPU", 0.0)


@ray.remote(num_cpus=1)
def free_cpus_before_and_while_waiting(app_name: str) -> tuple[float, list[float]]:
    before = ray.available_resources().get("CPU", 0.0)
    return before, serve_depth(app_name)([None, None], [None, None])


def test_a_task_waiting_on_depth_keeps_its_cpu(ray_cluster, serve_port):
    # A worker that blocked in ray.get lent its CPU back, and Ray started another worker for the
    # next item: one process per item in flight. Waiting must leave the CPU taken.
    serve.run(FreeCpusWhileCalled.bind(), name=APP, route_prefix=None)
    try:
        time.sleep(1)  # the replica's own start settles in the resource view
        before, during = ray.get(free_cpus_before_and_while_waiting.remote(APP), timeout=60)
    finally:
        serve.delete(APP)
    assert during == [before, before]
