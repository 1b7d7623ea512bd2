"""The depth deployment's autoscaling, observed: concurrent depth work takes it from one replica
to two, and once the work stops it goes back to one, as Serve's own status reports it.

The delays and the target come from the settings (``SERVE_UPSCALE_DELAY_S``,
``SERVE_DOWNSCALE_DELAY_S``, ``SERVE_TARGET_ONGOING_REQUESTS``). Serve's metrics window (pushed
every 10 s, averaged over 30 s) is not a depthmill setting; the test shortens it so the whole
cycle takes seconds instead of a minute."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from ray import serve
from ray.serve.schema import ReplicaState

from cluster.config.names import DEPTH_DEPLOYMENT
from cluster.config.settings import Settings
from cluster.model.options import ModelOptions
from serve_app.depth_deployment import autoscaling_config, depth_deployment
from devkit import media_files

pytestmark = pytest.mark.slow

APP = "depth-autoscale-test"  # an application of its own: the other tests' deployments stay as they are
FAST_METRICS = {"metrics_interval_s": 0.5, "look_back_period_s": 2.0}


def running_replicas() -> int:
    app = serve.status().applications.get(APP)
    if app is None or DEPTH_DEPLOYMENT not in app.deployments:
        return 0
    return app.deployments[DEPTH_DEPLOYMENT].replica_states.get(ReplicaState.RUNNING, 0)


def all_replicas() -> int:
    return sum(serve.status().applications[APP].deployments[DEPTH_DEPLOYMENT].replica_states.values())


@pytest.fixture
def autoscaled_handle(serve_port, tmp_path):
    settings = Settings(
        home=tmp_path, model="tiny", serve_min_replicas=1, serve_max_replicas=2,
        serve_target_ongoing_requests=2, serve_upscale_delay_s=0.5, serve_downscale_delay_s=1.0,
        # Batches never fill (12 callers, room for 16), so each waits out the batch wait: the
        # requests stay ongoing, as the autoscaler counts them, while the replica uses little
        # CPU, which the second replica needs to start.
        serve_num_cpus=0.25, serve_max_batch_size=16, model_batch_size=16, serve_batch_wait_s=0.25,
    )
    deployment = depth_deployment(settings).options(
        autoscaling_config=autoscaling_config(settings) | FAST_METRICS)
    handle = serve.run(deployment.bind(ModelOptions.from_settings(settings)), name=APP,
                       route_prefix=None)
    yield handle
    serve.delete(APP)


async def _load_until(handle, image, concurrency: int, done, timeout_s: float) -> int:
    """Keep ``concurrency`` depth requests in flight until ``done()`` or the timeout; returns
    how many completed (every one must have succeeded)."""
    deadline = time.monotonic() + timeout_s
    completed = 0

    async def caller():
        nonlocal completed
        while not done() and time.monotonic() < deadline:
            result = await handle.remote(image)
            assert result.ok, result.error
            completed += 1

    await asyncio.gather(*[caller() for _ in range(concurrency)])
    return completed


def _wait_for(condition, timeout_s: float, poll_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def test_concurrent_depth_work_adds_a_replica_and_idleness_removes_it(autoscaled_handle):
    image = np.asarray(media_files.photo("chelsea").resize((64, 48)))
    assert running_replicas() == 1

    # Under load Serve decides on a second replica (counted from when it is starting) and the
    # load goes on until it runs: a replica's start (torch, the model) takes seconds on busy
    # cores.
    started = time.monotonic()
    completed = asyncio.run(_load_until(
        autoscaled_handle, image, concurrency=12, done=lambda: running_replicas() >= 2,
        timeout_s=60))
    scaled_up_s = time.monotonic() - started
    assert running_replicas() == 2, (
        f"not two running replicas after {scaled_up_s:.0f} s under load: {serve.status()}")
    assert completed > 0

    # Idle: the average of ongoing requests falls below the target and after the downscale
    # delay Serve stops the second replica.
    assert _wait_for(lambda: all_replicas() == 1, timeout_s=30), serve.status()
    assert running_replicas() == 1
    # The replica left serves as before.
    assert autoscaled_handle.remote(image).result().ok
