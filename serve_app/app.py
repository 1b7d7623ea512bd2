"""``build_app``: the gateway and the depth deployment as one Serve application.

    serve run serve_app/depthmill.yaml     # what `depthmill up` deploys, as YAML
"""

from __future__ import annotations

from ray.serve import Application

from cluster.config.settings import Settings
from serve_app.depth_deployment import build_depth_app
from serve_app.gateway import Gateway, gateway_actor_options


def build_depthmill_app(settings: Settings) -> Application:
    return Gateway.options(num_replicas=settings.gateway_replicas,
                           ray_actor_options=gateway_actor_options(settings)).bind(
        build_depth_app(settings), settings)


def build_app(args: dict[str, str]) -> Application:
    """Application builder for `serve run`/`serve deploy`: args override DEPTHMILL_* settings."""
    return build_depthmill_app(Settings(**args))
