"""/api/ai/models: the depth models served here, each with its licence and whether a replica has
it loaded. A request naming another model is refused with the served ones (``requested_model``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cluster.config.models import ModelNotServed, check_served, licence_of, served_models
from serve_app.api.auth import READ
from serve_app.api.deps import Context, SettingsDep
from serve_app.api.errors import ApiError
from serve_app.api.routes import health
from serve_app.api.schemas import ModelOut, ModelsOut

router = APIRouter(prefix="/api/ai", tags=["models"])


def requested_model(
    settings: SettingsDep,
    model: Annotated[str | None, Query(min_length=1, max_length=300,
                                       description="a served depth model (default: the first)")] = None,
) -> str:
    """The model a request asks for; a 422 naming the served ones for any other, since work
    queued for it would never be claimed."""
    try:
        return check_served(model, served_models(settings.model))
    except ModelNotServed as e:
        raise ApiError(422, "model_not_served", str(e)) from None


@router.get("/models", dependencies=[READ], response_model=ModelsOut, summary="Served depth models, licence, loaded or not")
async def models(ctx: Context) -> ModelsOut:
    info = await health._depth_info(ctx)
    up = info["status"] != "unhealthy"  # degraded: loaded, on fewer replicas than it should
    replicas = health._running_replicas() if up else None  # Serve's status needs Ray

    def one(model: str) -> ModelOut:
        loaded = up and info.get("model_id") == model
        return ModelOut(id=model, licence=licence_of(model), loaded=loaded,
                        replicas=replicas if loaded else 0 if up else None,
                        device=info.get("device") if loaded else None)

    return ModelsOut(models=[one(m) for m in served_models(ctx.settings.model)])
