from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from cluster.config.settings import Settings
from serve_app.api.context import ApiContext
from serve_app.api.main import create_api
from serve_app.gateway import build_context


class Api:
    """A TestClient on the FastAPI app with a real database and local storage, no Ray; ``ctx``
    is the context its routes use (to put objects in storage or rows in the database)."""

    def __init__(self, client: TestClient, ctx: ApiContext) -> None:
        self.client, self.ctx = client, ctx

    def __getattr__(self, name: str):  # get, post, delete, ... on the client
        return getattr(self.client, name)


@pytest.fixture
def make_api(database_url, tmp_path) -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def make(*, depth=None, scheduler=None, deliverer=None, start_video_render=None,
             **overrides) -> Api:
        settings = Settings(home=tmp_path, database_url=database_url, model="tiny", **overrides)
        app = create_api(settings.cors_origins, settings.max_upload_bytes)
        ctx = build_context(settings, depth=depth, scheduler=scheduler, deliverer=deliverer,
                            start_video_render=start_video_render)
        app.state.ctx = ctx
        made.append(Api(TestClient(app), ctx))
        return made[-1]

    yield make
    for api in made:
        api.client.close()
        api.ctx.ingest_pool.shutdown()
        api.ctx.event_wake.close()
        api.ctx.db.close()


@pytest.fixture
def api(make_api) -> Api:
    return make_api()
