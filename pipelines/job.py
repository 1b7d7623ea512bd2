"""What every Ray job of depthmill does around its work: read the settings it was handed, join the
cluster it was submitted to, print its summary as JSON, exit 1 when anything failed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import ray

from cluster.config.settings import Settings


def job_main(
    argv: list[str] | None,
    parser: argparse.ArgumentParser,
    run: Callable[[Settings, argparse.Namespace], dict],
    failed: Callable[[dict], bool],
) -> int:
    args = parser.parse_args(argv)
    settings = Settings.for_job()
    if args.model:
        # A reprocess's model was checked to be served before it was submitted; an export's
        # need not be (it reads the depth maps a model stored).
        settings = settings.with_model(args.model, served=False)
    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=False)
    summary = run(settings, args)
    print(json.dumps(summary, indent=2, default=str))
    return 1 if failed(summary) else 0
