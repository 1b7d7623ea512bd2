"""The depth model on Ray Serve: the core (``cluster.model.core``) behind dynamic batching and
autoscaling replicas. Callers send decoded RGB arrays (they travel through Ray's object store) and
get :class:`~cluster.model.contract.DepthResult` back; nothing here knows about HTTP.

    serve run serve_app/depth.yaml          # or: serve deploy serve_app/depth.yaml
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve import Application

from cluster.config.worker_env import BACKGROUND_ENV, yield_cpu_to_foreground
from cluster.model.contract import DepthResult
from cluster.model.options import ModelOptions
from cluster.config.worker_env import ARRAYS_MALLOC_ENV
from cluster.config.names import DEPTH_DEPLOYMENT
from cluster.config.settings import Settings

HEALTH_PROBE = np.full((28, 28, 3), 127, np.uint8)


@serve.deployment(name=DEPTH_DEPLOYMENT, max_ongoing_requests=128, health_check_period_s=10)
class DepthDeployment:
    def __init__(self, options: ModelOptions) -> None:
        self.core = options.load()
        if self.core.device.type == "cpu":
            yield_cpu_to_foreground()  # on a GPU the host CPU work is small; on a CPU it is all
        self.batches = 0
        self.items = 0
        self.largest_batch = 0
        self.started = time.time()
        self.batching: dict[str, Any] = {}

    def reconfigure(self, config: dict[str, Any]) -> None:
        """user_config: batch size and wait can change without restarting replicas."""
        self.batching = dict(config)
        if "max_batch_size" in config:
            self.predict_batch.set_max_batch_size(int(config["max_batch_size"]))
        if "batch_wait_timeout_s" in config:
            self.predict_batch.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    # Two batches at once: each runs in its own thread (torch on one intra-op thread per replica
    # of under a CPU, as Ray sets it), so on a CPU the model gets two cores rather than one while
    # the processing tasks wait on it, where one batch at a time made the replica the machine's
    # bottleneck; on a GPU one batch's host work (copies, postprocess) overlaps the other's
    # forward pass. max_ongoing_requests (2 × the batch size) leaves room for both.
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, max_concurrent_batches=2)
    async def predict_batch(
        self, images: list[np.ndarray], output_sizes: list[tuple[int, int] | None]
    ) -> list[DepthResult]:
        self.batches += 1
        self.items += len(images)
        self.largest_batch = max(self.largest_batch, len(images))
        # In a thread, so the replica keeps accepting requests (and filling the next batch)
        # while this one runs.
        return await asyncio.to_thread(self.core.predict, images, output_sizes)

    async def __call__(
        self, image: np.ndarray, output_size: tuple[int, int] | None = None
    ) -> DepthResult:
        return await self.predict_batch(image, output_size)

    def info(self) -> dict[str, Any]:
        return {
            **self.core.info.as_dict(),
            "replica": serve.get_replica_context().replica_id.unique_id,
            "pid": os.getpid(),
            "batches": self.batches,
            "items": self.items,
            "mean_batch_size": self.items / self.batches if self.batches else None,
            "largest_batch": self.largest_batch,
            "batching": self.batching,
            "uptime_s": time.time() - self.started,
        }

    def check_health(self) -> None:
        """Serve restarts a replica whose model can no longer run a forward pass."""
        (result,) = self.core.predict([HEALTH_PROBE])
        if not result.ok:
            raise RuntimeError(f"depth model is broken: {result.error}")


def _cluster_has_gpu() -> bool:
    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def autoscaling_config(settings: Settings) -> dict[str, Any]:
    """Serve's autoscaling for the depth replicas. Serve's own metrics window (pushed every
    10 s, averaged over 30 s) is left at its default: it sets how fast a change in load is seen,
    on top of the delays."""
    return {
        "min_replicas": settings.serve_min_replicas,
        "initial_replicas": max(1, settings.serve_min_replicas),
        "max_replicas": max(settings.serve_max_replicas, settings.serve_min_replicas, 1),
        "target_ongoing_requests": settings.serve_target_ongoing_requests,
        "upscale_delay_s": settings.serve_upscale_delay_s,
        "downscale_delay_s": settings.serve_downscale_delay_s,
    }


def depth_deployment(settings: Settings):
    """The deployment with replicas, resources and batching taken from settings."""
    num_gpus = settings.serve_num_gpus
    if num_gpus is None:
        num_gpus = 1 if _cluster_has_gpu() else 0
    low, high = settings.serve_min_replicas, settings.serve_max_replicas
    if low >= 1 and high <= low:
        # Nothing to scale (the default, one replica): a fixed count spares the controller its
        # autoscaling decisions and every handle and replica their metrics pushes to it, CPU
        # that, on a small machine, came out of the depth work.
        replicas: dict[str, Any] = {"num_replicas": low}
    else:
        replicas = {"autoscaling_config": autoscaling_config(settings)}
    return DepthDeployment.options(
        **replicas,
        # Room for a full batch on every replica plus the next one filling: a lower cap would
        # silently shrink the batches.
        max_ongoing_requests=max(2 * settings.serve_max_batch_size, 8),
        ray_actor_options={"num_gpus": num_gpus, "num_cpus": settings.serve_num_cpus,
                           "resources": dict(settings.serve_resources),
                           # On a CPU the replica's work is all background (see __init__).
                           "runtime_env": {"env_vars": ARRAYS_MALLOC_ENV | (
                               {} if num_gpus else BACKGROUND_ENV)}},
        user_config={
            "max_batch_size": settings.serve_max_batch_size,
            "batch_wait_timeout_s": settings.serve_batch_wait_s,
        },
    )


def build_depth_app(settings: Settings) -> Application:
    return depth_deployment(settings).bind(ModelOptions.from_settings(settings))


def build_app(args: dict[str, str]) -> Application:
    """The application builder ``serve run``/``serve deploy`` call with the YAML's ``args``;
    each arg overrides the DEPTHMILL_* setting of the same name."""
    return build_depth_app(Settings(**args))
