"""The processing step as a Ray task, calling the depth deployment through a Serve handle."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import ray

from cluster.config.worker_env import BACKGROUND_ENV, yield_cpu_to_foreground
from cluster.model.contract import DepthResult, PhotoDepth
from cluster.config.worker_env import ARRAYS_MALLOC_ENV
from cluster.work.processing import DepthUnavailable, Outcome, process_item
from cluster.config.names import APP_NAME, DEPTH_DEPLOYMENT
from cluster.config.placement import photos_decode_in_replica
from cluster.config.settings import Settings
from cluster.media import configure_pillow
from cluster.storage import Storage, storage_from_settings
from db.queue import ClaimedItem

DEPTH_TIMEOUT_S = 300


_per_process: dict[tuple[str, str], object] = {}


def _once_per_process(what: str, key: str, make):
    """``make()`` once per worker process for each ``key``, not once per task."""
    if (what, key) not in _per_process:
        _per_process[what, key] = make()
    return _per_process[what, key]


def _storage(settings: Settings) -> Storage:
    return _once_per_process("storage", settings.model_dump_json(),
                             lambda: storage_from_settings(settings))


def _depth_handle(app_name: str):
    # Each handle starts its own Serve router (replica long-poll, metrics push), which a handle
    # per task would start again every time.
    from ray import serve

    return _once_per_process("depth handle", app_name, lambda: serve.get_deployment_handle(
        DEPTH_DEPLOYMENT, app_name=app_name))


def serve_depth(app_name: str = APP_NAME, model_id: str | None = None):
    """A DepthFn backed by the deployment: one request per image, all in flight together, so
    the deployment's dynamic batching sees them at once. ``model_id``: the served model to ask
    (Serve's multiplexing routes to a replica that has it loaded); None: the default one."""

    def depth(images: Sequence[np.ndarray], sizes) -> list[DepthResult]:
        return _call_deployment(app_name, model_id, "__call__", list(zip(images, sizes)))

    return depth


def serve_photo_depth(app_name: str = APP_NAME, model_id: str | None = None):
    """A PhotoDepthFn backed by the deployment: the photo's bytes go to the replica, which
    decodes them (nvJPEG on a GPU) and answers with the depth and the renditions."""

    def photo_depth(content: bytes, size) -> PhotoDepth:
        (answer,) = _call_deployment(app_name, model_id, "photo", [(content, size)])
        return answer

    return photo_depth


def _call_deployment(app_name: str, model_id: str | None, method: str, requests: list) -> list:
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    try:
        handle = _depth_handle(app_name).options(method_name=method)
        if model_id is not None:
            handle = handle.options(multiplexed_model_id=model_id)
        responses = [handle.remote(*args) for args in requests]
        return asyncio.run(_await_all(responses, DEPTH_TIMEOUT_S))
    except (DeploymentUnavailableError, BackPressureError, ray.exceptions.RayActorError,
            ray.exceptions.ActorUnavailableError, TimeoutError, ValueError) as e:
        # ValueError: Serve raises it for an application that does not exist (yet).
        raise DepthUnavailable(f"{type(e).__name__}: {e}") from e


def _photos_decode_in_replica(settings: Settings) -> bool:
    # With PHOTO_DECODE=auto (depthmill up decides it; a scheduler started otherwise may not),
    # this asks Ray for the cluster's GPUs.
    return _once_per_process("photo decode", settings.model_dump_json(),
                             lambda: photos_decode_in_replica(settings))


async def _await_all(responses: list, timeout_s: float) -> list:
    # Awaited, not response.result(): that is a ray.get, and a worker blocked in ray.get lends
    # its CPU back to Ray, which starts another worker for the next queued item. With the
    # scheduler's 32 items in flight on two cores, that grew to one process (~270 MB) per item,
    # each waiting on the depth replica. Awaiting keeps the CPU reserved and the pool at the
    # size the CPUs allow.
    try:
        return await asyncio.wait_for(asyncio.gather(*responses), timeout_s)
    except BaseException:
        for response in responses:
            response.cancel()
        raise


# max_retries: Ray re-runs the task when its worker or node dies; exceptions are turned into an
# Outcome inside, so they are not retried here but by the queue (attempts, backoff).
# A quarter CPU: a task waits on the depth replica for about half its run, so four per two cores
# keep the replica's queue from running dry between one task's end and the next one's start.
@ray.remote(max_retries=3, num_cpus=0.25,
            runtime_env={"env_vars": BACKGROUND_ENV | ARRAYS_MALLOC_ENV})
def process_item_task(item: ClaimedItem, settings: Settings, app_name: str = APP_NAME) -> Outcome:
    yield_cpu_to_foreground()
    configure_pillow()
    photo_depth = (serve_photo_depth(app_name, item.model_id)
                   if _photos_decode_in_replica(settings) else None)
    return process_item(item, settings, _storage(settings), serve_depth(app_name, item.model_id),
                        photo_depth=photo_depth)
