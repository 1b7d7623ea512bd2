"""Submitting the bulk jobs (reprocess, export) through the Ray Jobs SDK and following their
logs."""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable, Sequence

from cluster.config.models import served_models
from cluster.config.worker_env import ARRAYS_MALLOC_ENV
from cluster.config.settings import JOB_SETTINGS_ENV, Settings

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def dashboard_address(address: str | None) -> str:
    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_DASHBOARD
    return address if "://" in address else f"http://{address}"


def job_env(settings: Settings) -> dict[str, str]:
    """The job runs elsewhere in the cluster: hand it this command's settings, serialised."""
    return {JOB_SETTINGS_ENV: settings.to_json()}


def _submit(client, entrypoint: str, runtime_env: dict, wait_s: float = 90) -> str:
    """Submit, waiting out a cluster that is still starting (its job agent not up yet)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def requested_model(filters: Sequence[str]) -> str | None:
    """The ``--model`` among the job's filters, if any (``--model M`` or ``--model=M``)."""
    found = None
    for i, arg in enumerate(filters):
        if arg == "--model" and i + 1 < len(filters):
            found = filters[i + 1]
        elif arg.startswith("--model="):
            found = arg.split("=", 1)[1]
    return found


def submit_reprocess(
    settings: Settings, address: str | None, filters: Sequence[str], *,
    working_dir: str | None = None, echo: Callable[[str], object] = print,
) -> int:
    wanted = requested_model(filters)
    served = served_models(settings)
    if wanted is not None and wanted not in served:
        names = ", ".join(map(repr, served))
        echo(f"no depth model {wanted!r} is served here (depthmill serves {names}); "
             f"reprocess with --model {settings.model}, or add {wanted} to DEPTHMILL_MODELS "
             f"and run `depthmill up` for it first.")
        return 1
    return submit_job(settings, address, "pipelines.reprocess", filters,
                      working_dir=working_dir, echo=echo)


def submit_job(
    settings: Settings, address: str | None, module: str, args: Sequence[str], *,
    working_dir: str | None = None, echo: Callable[[str], object] = print,
) -> int:
    """Submit ``python -m module args`` with this command's settings, follow its logs to the
    end; 0 when it succeeded."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(dashboard_address(address))
    # The jobs' workers decode photos and pass arrays around: the same allocator settings as the
    # depth replicas and processing workers.
    runtime_env: dict = {"env_vars": job_env(settings) | ARRAYS_MALLOC_ENV}
    if working_dir:
        runtime_env["working_dir"] = working_dir
    entrypoint = f"python -m {module} " + shlex.join(args)
    job_id = _submit(client, entrypoint, runtime_env)
    echo(f"submitted {job_id}: {entrypoint}")

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            echo(lines.rstrip("\n"))

    asyncio.run(follow())
    status = client.get_job_status(job_id)
    while str(status.value if hasattr(status, "value") else status) not in TERMINAL:
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    status = str(status.value if hasattr(status, "value") else status)
    echo(f"job {job_id} {status}")
    return 0 if status == "SUCCEEDED" else 1


def export_args(args) -> list[str]:
    """The export job's arguments from ``depthmill export``'s (checked there already)."""
    forwarded = ["--to", args.to]
    if args.layouts:
        forwarded += ["--layout", ",".join(args.layouts)]
    for option in ("model", "kind", "status", "since", "s3_endpoint", "workers", "max_cpus"):
        value = getattr(args, option, None)
        if value is not None:
            forwarded += [f"--{option.replace('_', '-')}", str(value)]
    return forwarded
