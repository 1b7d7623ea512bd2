"""Where the depth work runs: the GPUs a depth replica takes, and so where photos are decoded."""

from __future__ import annotations

from cluster.config.settings import Settings


def depth_replica_gpus(settings: Settings) -> float:
    """GPUs per depth replica: SERVE_NUM_GPUS, else one where the Ray cluster has a GPU."""
    if settings.serve_num_gpus is not None:
        return settings.serve_num_gpus
    import ray  # only asked where Ray is already up: the runtime, the scheduler's tasks

    return 1 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0


def photos_decode_in_replica(settings: Settings) -> bool:
    """Whether a processing task sends the depth replica a photo's bytes (decoded there, by
    nvJPEG on a GPU) rather than its decoded pixels. On a CPU the tasks decode: there the decode
    is spread over every task's core instead of adding to the replica's."""
    if settings.photo_decode != "auto":
        return settings.photo_decode == "replica"
    return depth_replica_gpus(settings) > 0


def placed(settings: Settings) -> Settings:
    """``settings`` with where the depth work runs decided once, from the cluster the app is
    deployed to: the replicas' GPUs, and so where photos are decoded. The deployment and every
    processing task then agree, however the cluster changes later (GPU nodes added by an
    autoscaler, say); a task deciding alone would go by the cluster as it found it."""
    settings = settings.model_copy(update={"serve_num_gpus": depth_replica_gpus(settings)})
    in_replica = photos_decode_in_replica(settings)
    return settings.model_copy(update={"photo_decode": "replica" if in_replica else "worker"})
