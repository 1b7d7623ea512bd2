"""/api/queue: status, stats, summary, items, enqueue, cancel, retry, worker control."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from db import queue
from db.vocabulary import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_PRIORITY, MIN_PRIORITY, Kind, Status
from serve_app.api.auth import ADMIN, READ, WRITE
from serve_app.api.deps import Context, Db, SettingsDep
from serve_app.api.errors import ApiError, documented
from serve_app.api.routes.models import requested_model
from serve_app.api.schemas import (
    QueueItemOut,
    QueuePageOut,
    QueueStatsOut,
    QueueStatusOut,
    SummaryRowOut,
    WorkerStatusOut,
)

router = APIRouter(prefix="/api/queue", tags=["queue"])

StatusName = Status


@router.get("/status", dependencies=[READ], response_model=QueueStatusOut, summary="waiting, active, completed, failed")
def status(db: Db) -> QueueStatusOut:
    counts = db.run(queue.stats).status_counts()
    return QueueStatusOut(**{k: counts[k] for k in QueueStatusOut.model_fields})


@router.get("/stats", dependencies=[READ], response_model=QueueStatsOut,
            summary="Counts by status and kind, throughput and ETA")
def stats(db: Db) -> QueueStatsOut:
    s = db.run(queue.stats)
    return QueueStatsOut(
        counts=s.counts, totals=s.status_counts(),
        throughput_per_minute=s.throughput_per_minute,
        completed_last_minute=s.completed_last_minute,
        completed_last_hour=s.completed_last_hour,
        avg_processing_seconds=s.avg_processing_seconds,
        remaining=s.remaining, eta_seconds=s.eta_seconds,
    )


@router.get("/summary", dependencies=[READ], response_model=list[SummaryRowOut], summary="One row per status and kind")
def summary(db: Db) -> list[SummaryRowOut]:
    return [SummaryRowOut(**row.__dict__) for row in db.run(queue.summary)]


@router.get("/items", dependencies=[READ], response_model=QueuePageOut, responses=documented(400), summary="Items in claim order, filtered, paged")
def items(
    db: Db,
    status: Annotated[list[StatusName] | None, Query()] = None,
    kind: Kind | None = None,
    model_id: Annotated[str | None, Query(max_length=300)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> QueuePageOut:
    page = db.run(queue.list_items, statuses=status, kind=kind, model_id=model_id, limit=limit,
                  cursor=cursor)
    return QueuePageOut(items=[QueueItemOut.of(i) for i in page.items], next_cursor=page.next_cursor)


@router.get("/items/{item_id}", dependencies=[READ], response_model=QueueItemOut, responses=documented(404))
def item(item_id: uuid.UUID, db: Db) -> QueueItemOut:
    return QueueItemOut.of(db.run(queue.get_item, item_id))


@router.post("/enqueue/{media_id}", dependencies=[WRITE], response_model=QueueItemOut, responses=documented(404),
             summary="Queue media for processing (optionally now: priority 0)")
def enqueue(
    media_id: uuid.UUID, db: Db, settings: SettingsDep,
    model: Annotated[str, Depends(requested_model)],
    priority: Annotated[int | None, Query(ge=MIN_PRIORITY, le=MAX_PRIORITY)] = None,
) -> QueueItemOut:
    return QueueItemOut.of(db.run(queue.enqueue, media_id, model, priority=priority,
                                  max_attempts=settings.max_attempts))


@router.post("/items/{item_id}/cancel", dependencies=[WRITE], response_model=QueueItemOut, responses=documented(404, 409))
def cancel(item_id: uuid.UUID, db: Db) -> QueueItemOut:
    return QueueItemOut.of(db.run(queue.cancel, item_id))


@router.post("/items/{item_id}/retry", dependencies=[WRITE], response_model=QueueItemOut, responses=documented(404, 409))
def retry(item_id: uuid.UUID, db: Db) -> QueueItemOut:
    return QueueItemOut.of(db.run(queue.retry, item_id))


@router.post("/retry-failed", dependencies=[WRITE], summary="Queue every failed item again")
def retry_failed(db: Db, kind: Kind | None = None) -> dict:
    return {"requeued": db.run(queue.retry_all_failed, kind=kind)}


async def _scheduler_call(ctx, method: str) -> dict:
    scheduler = ctx.scheduler() if ctx.scheduler else None
    if scheduler is None:
        raise ApiError(503, "scheduler_unavailable", "the scheduler is not running")
    try:
        return await asyncio.wait_for(getattr(scheduler, method).remote(), timeout=10)
    except Exception as e:
        raise ApiError(503, "scheduler_unavailable", f"the scheduler did not answer: {e}") from e


@router.get("/worker/status", dependencies=[READ], tags=["worker"], response_model=WorkerStatusOut)
async def worker_status(ctx: Context) -> dict:
    return await _scheduler_call(ctx, "status")


@router.post("/worker/start", dependencies=[ADMIN], tags=["worker"], response_model=WorkerStatusOut,
             summary="Resume claiming")
async def worker_start(ctx: Context) -> dict:
    return await _scheduler_call(ctx, "resume")


@router.post("/worker/stop", dependencies=[ADMIN], tags=["worker"], response_model=WorkerStatusOut,
             summary="Pause claiming; items in flight finish")
async def worker_stop(ctx: Context) -> dict:
    return await _scheduler_call(ctx, "pause")
