"""/api/health (per service, in the shape of the image-gallery backend depthmill replaces) and
/api/ai/health, /api/ai/info."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cluster.config.names import DEPTH_DEPLOYMENT
from db import queue
from serve_app.api.deps import Context

router = APIRouter(tags=["health"])

MAX_HEALTH_AGE_S = 5.0


async def _depth_info(ctx) -> dict:
    if ctx.depth is None:
        return {"status": "unhealthy", "error": "no depth deployment configured"}
    try:
        info = await asyncio.wait_for(ctx.depth.info.remote(), timeout=5)
    except Exception as e:
        return {"status": "unhealthy", "error": f"{type(e).__name__}: {e}"[:300]}
    answer = {"status": "healthy", **info,
              "note": None if info.get("real_estimate") else
              "random weights: the output is not a real depth estimate"}
    # One replica answering is not the whole deployment: replicas lost with their node leave
    # it short (and Serve waiting for a node to start new ones on) while the rest still answer.
    short = await asyncio.to_thread(_replicas_short)
    if short is not None:
        answer.update(status="degraded", error=short)
    return answer


def _check(fn) -> dict:
    try:
        fn()
        return {"status": "healthy"}
    except Exception as e:
        return {"status": "unhealthy", "error": f"{type(e).__name__}: {e}"[:300]}


async def _actor_status(handle, name: str, ok) -> dict:
    """An actor's ``status()``, healthy when ``ok(status)``, degraded when not, unhealthy when it
    is not running or does not answer."""
    if handle is None:
        return {"status": "unhealthy", "error": f"{name} not running"}
    try:
        st = await asyncio.wait_for(handle.status.remote(), timeout=5)
    except Exception as e:
        return {"status": "unhealthy", "error": str(e)[:300]}
    return {"status": "healthy" if ok(st) else "degraded", **st}


async def _scheduler_status(ctx) -> dict:
    return await _actor_status(
        ctx.scheduler() if ctx.scheduler else None, "scheduler",
        lambda st: st["depth_available"] and st["storage_available"] and not st["last_error"])


async def _deliverer_status(ctx) -> dict:
    return await _actor_status(ctx.deliverer(), "webhook deliverer",
                               lambda st: st["running"] and not st["last_error"])


async def _webhooks_latest(ctx) -> tuple[dict, float] | None:
    # A gateway always has a deliverer to ask; an API built without webhooks has none to report.
    if ctx.deliverer is None:
        return None
    return await ctx.deliverer_state.latest(lambda: _deliverer_status(ctx))


@router.get("/api/health", summary="Health of every service; 200 healthy/degraded, 503 unhealthy")
async def health(ctx: Context) -> JSONResponse:
    # The last full check, at once, with its age; a new one runs in the background when it is
    # over a second old. A probe never waits behind the database, storage or thread pool under
    # load, only when the last answer is older than MAX_HEALTH_AGE_S (the check itself hangs).
    body, age = await ctx.health.latest(lambda: _check_all(ctx), max_age_s=MAX_HEALTH_AGE_S)
    body = {**body, "age_s": round(age, 3)}
    return JSONResponse(body, status_code=503 if body["status"] == "unhealthy" else 200)


async def _check_all(ctx) -> dict:
    # At once, not one after another: the depth replica answers at background CPU priority, and
    # under load its answer alone can take most of a second.
    database, storage, (depth, depth_age), (scheduler, scheduler_age), webhooks = (
        await asyncio.gather(
            asyncio.to_thread(_check, ctx.db.ping),
            asyncio.to_thread(_check, ctx.storage.check),
            ctx.depth_state.latest(lambda: _depth_info(ctx)),
            ctx.scheduler_state.latest(lambda: _scheduler_status(ctx)),
            _webhooks_latest(ctx),
        ))
    # Their last known state, checked in the background: under load the depth replica (at
    # background CPU priority) and the scheduler actor can take seconds to answer.
    depth = {**depth, "age_s": round(depth_age, 3)}
    scheduler = {**scheduler, "age_s": round(scheduler_age, 3)}
    services: dict[str, dict] = {"database": database, "storage": storage,
                                 "ray": _check(_ray_ok), "depth": depth, "scheduler": scheduler}
    if webhooks is not None:
        services["webhooks"] = {**webhooks[0], "age_s": round(webhooks[1], 3)}
    if services["database"]["status"] == "healthy":
        try:
            counts = (await asyncio.to_thread(ctx.db.run, queue.stats)).status_counts()
            services["queue"] = {"status": "healthy", **counts}
        except Exception as e:
            services["queue"] = {"status": "unhealthy", "error": str(e)[:300]}
    else:
        services["queue"] = {"status": "unhealthy", "error": "database unreachable"}
    if services["database"]["status"] != "healthy":
        overall = "unhealthy"
    elif any(s["status"] != "healthy" for s in services.values()):
        overall = "degraded"
    else:
        overall = "healthy"
    return {"status": overall, "timestamp": datetime.now(UTC).isoformat(), "version": ctx.version,
            "services": services}


def _ray_ok() -> None:
    import ray

    if not ray.is_initialized():
        raise RuntimeError("not connected to a Ray cluster")


@router.get("/api/ai/health", summary="Depth model health")
async def ai_health(ctx: Context) -> JSONResponse:
    info = await _depth_info(ctx)
    return JSONResponse(info, status_code=503 if info["status"] == "unhealthy" else 200)


@router.get("/api/ai/info", summary="Depth model id, revision, device, dtype, replicas")
async def ai_info(ctx: Context) -> JSONResponse:
    info = await _depth_info(ctx)
    if info["status"] == "unhealthy":
        return JSONResponse({"error": {"code": "depth_unavailable", "message": info["error"]}}, 503)
    info["replicas"] = _replica_count()
    return JSONResponse(info)


def _replicas_short() -> str | None:
    """Why the depth deployment is short of replicas (lost, or waiting for resources to start
    on), or None when it has them all or Serve cannot be asked. A deployment scaling up or down
    is doing what it was told: not short."""
    try:
        from ray.serve.schema import DeploymentStatus, ReplicaState

        for app in _serve_applications():
            deployment = app.deployments.get(DEPTH_DEPLOYMENT)
            if deployment is None or deployment.status in (
                    DeploymentStatus.HEALTHY, DeploymentStatus.UPSCALING,
                    DeploymentStatus.DOWNSCALING):
                continue
            running = deployment.replica_states.get(ReplicaState.RUNNING, 0)
            return (f"depth deployment {deployment.status.value.lower()}: {running} of its "
                    f"replicas running ({deployment.message or 'no message'})")[:300]
    except Exception:
        return None
    return None


def _replica_count() -> int | None:
    return _replicas(running_only=False)


def _running_replicas() -> int | None:
    return _replicas(running_only=True)


def _serve_applications() -> list:
    """Serve's applications, or none when this process is not connected to Ray (as in the API's
    tests): serve.status() would start a cluster, or join whichever it finds, to answer."""
    import ray

    if not ray.is_initialized():
        return []
    from ray import serve

    return list(serve.status().applications.values())


def _replicas(*, running_only: bool) -> int | None:
    try:
        from ray.serve.schema import ReplicaState

        for app in _serve_applications():
            if DEPTH_DEPLOYMENT in app.deployments:
                states = app.deployments[DEPTH_DEPLOYMENT].replica_states
                return states.get(ReplicaState.RUNNING, 0) if running_only else sum(states.values())
    except Exception:
        return None
    return None
