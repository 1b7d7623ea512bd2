"""The depth model on Ray Serve: the core (``cluster.model.core``) behind dynamic batching and
autoscaling replicas. Callers send decoded RGB arrays (they travel through Ray's object store) and
get :class:`~cluster.model.contract.DepthResult` back, or send a photo's encoded bytes to
``photo`` and get its depth and renditions (:class:`~cluster.model.contract.PhotoDepth`);
nothing here knows about HTTP.

    serve run serve_app/depth.yaml          # or: serve deploy serve_app/depth.yaml
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray import serve
from ray.serve import Application

from cluster.config.models import ModelNotServed, served_models
from cluster.config.worker_env import BACKGROUND_ENV, yield_cpu_to_foreground
from cluster.model.contract import DepthResult, PhotoDepth
from cluster.model.options import ModelOptions
from cluster.config.worker_env import ARRAYS_MALLOC_ENV
from cluster.config.names import DEPTH_DEPLOYMENT
from cluster.config.placement import depth_replica_gpus
from cluster.config.settings import Settings
from cluster.media import configure_pillow

if TYPE_CHECKING:
    from cluster.model.core import DepthEstimator

HEALTH_PROBE = np.full((28, 28, 3), 127, np.uint8)


class LoadedModel:
    """A core in Serve's per-replica model cache. Serve calls ``__del__`` when its LRU policy
    unloads the model (the documented hook): the replica then forgets it too, so nothing holds
    the weights any more."""

    def __init__(self, model_id: str, core: DepthEstimator, loaded: dict[str, DepthEstimator]):
        self.model_id, self._loaded = model_id, loaded
        self.core: DepthEstimator | None = core

    def __del__(self) -> None:
        # Serve calls it, then the collector may again: only the entry of this core goes.
        if self.core is None:
            return
        if self._loaded.get(self.model_id) is self.core:
            del self._loaded[self.model_id]
        device, self.core = self.core.device, None
        # A batch still running on the model keeps its weights until it ends; otherwise they
        # are freed here, and on a GPU their memory goes back for the next model to load.
        from cluster.model.core import release_cached_memory

        release_cached_memory(device)


@serve.deployment(name=DEPTH_DEPLOYMENT, max_ongoing_requests=128, health_check_period_s=10)
class DepthDeployment:
    """Every served model through Serve's model multiplexing: callers name one with
    ``handle.options(multiplexed_model_id=...)``, Serve routes to a replica that has it loaded
    where it can, and a replica loads what it is asked for, keeping the ``max_models`` it used
    last. A request that names none gets the default model."""

    def __init__(self, options: ModelOptions, served: tuple[str, ...] = (),
                 max_models: int = 1) -> None:
        configure_pillow()  # photos sent as bytes are decoded here
        self.options = options
        self.default_model = options.model
        self.served = tuple(served) or (options.model,)
        # The default model is loaded at start, so a model that cannot load fails the replica
        # (and `depthmill up`) at once; the others load when first asked for.
        self.loaded: dict[str, DepthEstimator] = {self.default_model: options.load()}
        self.loaded_at: dict[str, float] = {self.default_model: time.time()}
        if self.core.device.type == "cpu":
            yield_cpu_to_foreground()  # on a GPU the host CPU work is small; on a CPU it is all
        else:
            from cluster.model.photos import gpu_codec_available

            gpu_codec_available(self.core.device)  # probed at start: a warning if it fails
        # The cache size comes from settings, so the decorator is applied here, per replica
        # (Serve looks for multiplexing on instances too), and to a plain function: Serve keeps
        # its cache on the function, and a bound method takes no attributes.
        async def load_model(model_id: str) -> LoadedModel:
            return await self._load(model_id)

        self.load_model = serve.multiplexed(max_num_models_per_replica=max_models)(load_model)
        self._registered = False
        self.batches = 0
        self.items = 0
        self.largest_batch = 0
        self.started = time.time()
        self.batching: dict[str, Any] = {}

    @property
    def core(self) -> DepthEstimator | None:
        """The default model's core, else another loaded one (Serve unloaded the default), else
        None (one unloaded, the next still loading)."""
        loaded = dict(self.loaded)  # Serve unloads from a thread of its own
        return loaded.get(self.default_model) or next(iter(loaded.values()), None)

    async def _load(self, model_id: str) -> LoadedModel:
        if model_id not in self.served:
            raise ModelNotServed(model_id, self.served)
        core = self.loaded.get(model_id)
        if core is None:
            core = await asyncio.to_thread(self.options.for_model(model_id).load)
            self.loaded[model_id] = core
            self.loaded_at[model_id] = time.time()
        return LoadedModel(model_id, core, self.loaded)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """user_config: batch size and wait can change without restarting replicas."""
        if not self._registered:
            # Serve's cache (and so its routing and LRU) learns of the model loaded at start.
            self._registered = True
            await self.load_model(self.default_model)
        # Unset, a batch is what one forward pass takes on this replica's device.
        core = self.core
        size = int(config.get("max_batch_size") or (core.max_batch_size if core else 32))
        for batched in (self.predict_batch, self.photo_batch):
            batched.set_max_batch_size(size)
            if "batch_wait_timeout_s" in config:
                batched.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))
        self.batching = {**config, "max_batch_size": size}

    # Two batches at once: each runs in its own thread (torch on one intra-op thread per replica
    # of under a CPU, as Ray sets it), so on a CPU the model gets two cores rather than one while
    # the processing tasks wait on it, where one batch at a time made the replica the machine's
    # bottleneck; on a GPU one batch's host work (copies, postprocess) overlaps the other's
    # forward pass. max_ongoing_requests (2 × the batch size) leaves room for both.
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, max_concurrent_batches=2)
    async def predict_batch(
        self, model_ids: list[str], images: list[np.ndarray],
        output_sizes: list[tuple[int, int] | None],
    ) -> list[DepthResult]:
        return await self._per_model(model_ids, images, output_sizes,
                                     lambda core, *batch: core.predict(*batch))

    # Photos sent as their encoded bytes (PHOTO_DECODE=replica): decoded here, on the GPU where
    # there is one, with the renditions made from the same decode.
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, max_concurrent_batches=2)
    async def photo_batch(
        self, model_ids: list[str], contents: list[bytes],
        output_sizes: list[tuple[int, int] | None],
    ) -> list[PhotoDepth]:
        from cluster.model.photos import depth_for_photos  # torch: loaded here already

        return await self._per_model(model_ids, contents, output_sizes, depth_for_photos)

    async def _per_model(self, model_ids, inputs, output_sizes, run) -> list:
        """``run(core, inputs, output_sizes)`` for each model's share of a batch, in a thread, so
        the replica keeps accepting requests (and filling the next batch) while it runs."""
        self.batches += 1
        self.items += len(inputs)
        self.largest_batch = max(self.largest_batch, len(inputs))
        # Serve splits a batch by multiplexed model id already; grouped here as well, so that
        # one forward pass never mixes models whatever Serve does.
        groups: dict[str, list[int]] = {}
        for i, model_id in enumerate(model_ids):
            groups.setdefault(model_id, []).append(i)
        results: list[Any] = [None] * len(inputs)
        for model_id, indices in groups.items():
            core = (await self.load_model(model_id)).core
            answers = await asyncio.to_thread(
                run, core, [inputs[i] for i in indices], [output_sizes[i] for i in indices])
            for i, answer in zip(indices, answers):
                results[i] = answer
        return results

    def _requested_model(self) -> str:
        model_id = serve.get_multiplexed_model_id() or self.default_model
        if model_id not in self.served:  # before the batch, which fails as one
            raise ModelNotServed(model_id, self.served)
        return model_id

    async def __call__(
        self, image: np.ndarray, output_size: tuple[int, int] | None = None
    ) -> DepthResult:
        return await self.predict_batch(self._requested_model(), image, output_size)

    async def photo(self, content: bytes, output_size: tuple[int, int] | None = None) -> PhotoDepth:
        """A photo's depth and renditions from its encoded bytes."""
        return await self.photo_batch(self._requested_model(), content, output_size)

    def info(self) -> dict[str, Any]:
        context = serve.get_replica_context()
        core = self.core
        return {
            **(core.info.as_dict() if core is not None else {"model_id": None}),
            "replica": context.replica_id.unique_id,
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "default_model": self.default_model,
            "photo_decoder": _photo_decoder(core),
            "loaded_models": {m: {**c.info.as_dict(), "loaded_at": self.loaded_at.get(m)}
                              for m, c in list(self.loaded.items())},
            "batches": self.batches,
            "items": self.items,
            "mean_batch_size": self.items / self.batches if self.batches else None,
            "largest_batch": self.largest_batch,
            "batching": self.batching,
            "uptime_s": time.time() - self.started,
        }

    def check_health(self) -> None:
        """Serve restarts a replica whose model can no longer run a forward pass."""
        core = self.core
        if core is None:
            return  # between two models: the one loading is checked once it is in
        (result,) = core.predict([HEALTH_PROBE])
        if not result.ok:
            raise RuntimeError(f"depth model is broken: {result.error}")


def _photo_decoder(core: DepthEstimator | None) -> str | None:
    """What decodes the photos sent to this replica as bytes."""
    if core is None:
        return None
    from cluster.model.photos import gpu_codec_available

    return "nvjpeg" if gpu_codec_available(core.device) else "pillow"


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
    num_gpus = depth_replica_gpus(settings)
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
        max_ongoing_requests=max(2 * (settings.serve_max_batch_size or 32), 8),
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
    return depth_deployment(settings).bind(ModelOptions.from_settings(settings),
                                           tuple(served_models(settings)),
                                           settings.models_per_replica)


def build_app(args: dict[str, str]) -> Application:
    """The application builder ``serve run``/``serve deploy`` call with the YAML's ``args``;
    each arg overrides the DEPTHMILL_* setting of the same name."""
    return build_depth_app(Settings(**args))
