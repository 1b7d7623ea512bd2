"""/api/ai/models: the depth models served here, each with its licence and whether a replica has
it loaded, and where. A request naming another model is refused with the served ones
(``requested_model``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from cluster.config.models import ModelNotServed, check_served, licence_of, served_models
from serve_app.api.auth import READ
from serve_app.api.deps import Context, SettingsDep
from serve_app.api.errors import ApiError
from serve_app.api.routes import health
from serve_app.api.schemas import ModelOut, ModelPlace, ModelsOut

router = APIRouter(prefix="/api/ai", tags=["models"])

REPLICAS_TIMEOUT_S = 5


def requested_model(
    settings: SettingsDep,
    model: Annotated[str | None, Query(min_length=1, max_length=300,
                                       description="a served depth model (default: DEPTHMILL_MODEL)")] = None,
) -> str:
    """The model a request asks for; a 422 naming the served ones for any other, since work
    queued for it would never be claimed."""
    try:
        return check_served(model, served_models(settings), settings.model)
    except ModelNotServed as e:
        raise ApiError(422, "model_not_served", str(e)) from None


async def _replica_infos(ctx) -> tuple[list[dict] | None, bool]:
    """The depth replicas' ``info()`` (None when the deployment does not answer), and whether
    every replica answered (Serve's broadcast) rather than one (a handle without broadcast)."""
    if ctx.depth is None:
        return None, False
    try:
        if hasattr(ctx.depth, "broadcast"):
            response = ctx.depth.broadcast("info")
            return await asyncio.wait_for(response.results_async(), REPLICAS_TIMEOUT_S), True
        return [await asyncio.wait_for(ctx.depth.info.remote(), REPLICAS_TIMEOUT_S)], False
    except Exception:  # noqa: BLE001 - reported as loaded nowhere; /api/ai/health says why
        return None, False


def _places(infos: list[dict], model: str) -> list[ModelPlace]:
    places = []
    for info in infos:
        # A replica from before multiplexing reports its one model only.
        loaded = info.get("loaded_models") or {info.get("model_id"): info}
        if model in loaded:
            places.append(ModelPlace(replica=info.get("replica"), node=info.get("node"),
                                     device=loaded[model].get("device"),
                                     photo_decoder=info.get("photo_decoder")))
    return places


@router.get("/models", dependencies=[READ], response_model=ModelsOut,
            summary="Served depth models, licence, loaded where")
async def models(ctx: Context) -> ModelsOut:
    infos, every_replica = await _replica_infos(ctx)
    up = bool(infos)
    # One replica's answer stands for all of them, as many as Serve's status says run.
    running = None if every_replica or not up else health._running_replicas()

    def one(model: str) -> ModelOut:
        places = _places(infos, model) if up else []
        loaded = bool(places)
        replicas = len(places) if every_replica else running
        return ModelOut(id=model, licence=licence_of(model), loaded=loaded,
                        replicas=replicas if loaded else 0 if up else None,
                        device=places[0].device if loaded else None,
                        where=places if up else None)

    return ModelsOut(models=[one(m) for m in served_models(ctx.settings)])
