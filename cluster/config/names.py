"""The names the parts of a running depthmill find each other by: the Serve application and its
deployments, the scheduler and webhook delivery actors and the Ray namespace. Kept apart from the code they name, so
that a process which only looks something up (a processing task calling the depth deployment, the
gateway asking the scheduler) imports a few strings and not the deployment's torch stack."""

from __future__ import annotations

NAMESPACE = "depthmill"
APP_NAME = "depthmill"  # the Serve application `depthmill up` deploys
DEPTH_DEPLOYMENT = "DepthModel"  # as the Ray dashboard shows it
GATEWAY_DEPLOYMENT = "Gateway"
SCHEDULER_ACTOR = "depthmill-scheduler"
WEBHOOK_ACTOR = "depthmill-webhooks"  # delivers webhook events (cluster/events/delivery.py)
