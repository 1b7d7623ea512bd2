"""/api/events: the live event stream (Server-Sent Events) out of the events outbox.

Each stream remembers where it is in the outbox and reads on from there through the replica's
pool; between reads it waits for the replica's one look at the outbox (``EventWake``) to see it
move, never on a connection of its own. A client that comes back with ``Last-Event-ID`` (EventSource sends it on
its own reconnects) is read on from that event, whichever replica or restart it lands on: the
outbox, not the replica, holds its place.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from db import events, keys
from db.connection import DatabaseUnavailable
from serve_app.api.auth import EVENT_TOKEN, OPEN, READ, Caller, authorize, identify
from serve_app.api.deps import BearerCredentials, Context
from serve_app.api.errors import ApiError, documented
from serve_app.api.event_schemas import EVENT_MODELS, body
from serve_app.api.event_tokens import TokenError

router = APIRouter(prefix="/api/events", tags=["events"])

# Events read per round trip; a stream far behind reads on at once until it has caught up.
BATCH = 500


class EventTokenOut(BaseModel):
    token: str  # for GET /api/events?token=…; opens the stream only
    expires_at: int  # Unix seconds


@router.post("/token", response_model=EventTokenOut, dependencies=[READ],
             responses=documented(401, 403), summary="A short-lived token to open the event stream")
async def token(ctx: Context, request: Request) -> EventTokenOut:
    """For clients that cannot send a header (a browser's EventSource): trade the API key for a
    token valid `DEPTHMILL_EVENTS_TOKEN_SECONDS`, and open `/api/events?token=…` with it."""
    value, expires = ctx.event_tokens.issue(request.state.caller.key_id)
    return EventTokenOut(token=value, expires_at=expires)


async def _key_or_token(
    ctx: Context,
    request: Request,
    credentials: BearerCredentials,
    token: Annotated[str | None, Query(max_length=200, description=(
        "from POST /api/events/token, instead of the Authorization header"))] = None,
) -> Caller:
    if token is None or credentials is not None:
        return authorize(await identify(ctx, request, credentials), "read")
    # A token stands in for a read key; with no key of either kind the stream is open anyway.
    if not ctx.settings.api_keys and not await ctx.keys.any_exist():
        caller = OPEN
    else:
        try:
            key_id = ctx.event_tokens.check(token)
        except TokenError as e:
            raise ApiError(401, "unauthorized", f"{e}: ask POST /api/events/token for a new one",
                           {"WWW-Authenticate": "Bearer"}) from None
        if key_id is not None and not await run_in_threadpool(ctx.db.run, keys.usable, key_id):
            raise ApiError(401, "unauthorized", "the key this token was issued for is revoked "
                           "or expired: ask POST /api/events/token with a live key",
                           {"WWW-Authenticate": "Bearer"})
        caller = Caller(EVENT_TOKEN, key_id, ("read",))
    request.state.caller = caller
    return caller


_key_or_token.required_scope = "read"  # type: ignore[attr-defined]  # shown in the OpenAPI document

async def _patterns(
    types: Annotated[str | None, Query(max_length=1000, description=(
        "comma-separated event types to send, a family such as `item.*`, or `*`; "
        "default: every type"))] = None,
) -> list[str] | None:
    wanted = [t.strip() for t in (types or "").split(",") if t.strip()]
    if not wanted:
        return None
    try:
        return events.check_patterns(wanted)
    except ValueError as e:
        raise ApiError(422, "invalid_request", f"types: {e}") from None


async def _start(
    ctx: Context,
    header: Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)] = None,
    last_event_id: Annotated[int | None, Query(ge=0, description=(
        "resume after this event (a new EventSource cannot set the Last-Event-ID header, which "
        "takes precedence); default: from now"))] = None,
) -> int | None:
    if header is not None and header.strip():
        if not header.strip().isdigit():
            raise ApiError(422, "invalid_request", "Last-Event-ID: not an event id")
        return int(header.strip())
    if last_event_id is not None:
        return last_event_id
    # From now: what the outbox holds already is history. Read here, before the stream starts,
    # so a database outage answers a JSON 503 instead of an empty stream.
    return await run_in_threadpool(ctx.db.run, events.latest)


_STREAM_DOC = """Server-Sent Events: one message per event, `event:` its type, `id:` its outbox
id, `data:` the JSON body `{"type", "timestamp", "data"}` a webhook gets (each type's `data` is in
the document's `webhooks` section). Comment lines (`: heartbeat`) keep an idle stream open.
Resume with `Last-Event-ID` (or `?last_event_id=`): every event after that one, in commit order,
also across gateway restarts. Event types: """ + ", ".join(f"`{t}`" for t in EVENT_MODELS)


@router.get(
    "", response_class=EventSourceResponse, dependencies=[Depends(_key_or_token)],
    responses={200: {"description": _STREAM_DOC}, **documented(401, 403, 422, 503)},
    summary="Live events (Server-Sent Events)",
)
async def stream(
    ctx: Context,
    after: Annotated[int | None, Depends(_start)],
    patterns: Annotated[list[str] | None, Depends(_patterns)],
) -> AsyncIterator[ServerSentEvent]:
    settings, wake = ctx.settings, ctx.event_wake
    heartbeat_s = settings.events_heartbeat_s
    # Where this stream is in the outbox: the last event read, sent or filtered out (filtering
    # here, not in SQL, so a narrow filter never re-walks the events it skipped).
    position = after
    last_sent = time.monotonic()
    wake.streams += 1
    try:
        while True:
            seen, retry_s = wake.generation, heartbeat_s
            try:
                batch = await run_in_threadpool(ctx.db.run, events.read_after, position,
                                                limit=BATCH)
            except DatabaseUnavailable:
                batch, retry_s = [], 2.0  # a look may not move while it is away
            for event in batch:
                position = event.id
                if events.matches(patterns, event.type):
                    yield ServerSentEvent(event=event.type, id=str(event.id), data=body(event))
                    last_sent = time.monotonic()
            if len(batch) == BATCH:
                continue
            idle = time.monotonic() - last_sent
            if idle >= heartbeat_s:
                yield ServerSentEvent(comment="heartbeat")
                last_sent, idle = time.monotonic(), 0.0
            await wake.wait(seen, min(retry_s, heartbeat_s - idle))
    finally:
        # The client went away (the response is cancelled) or the replica is stopping.
        wake.streams -= 1
