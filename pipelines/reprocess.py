"""Bulk reprocessing as a Ray Data job:

    ray job submit --working-dir . -- python -m pipelines.reprocess --model M [filters]
    depthmill reprocess [filters]            # the same, through the Ray Jobs SDK

Selects media from Postgres (``read_sql``, sharded), downloads and decodes on CPU, runs the depth
core on an actor pool (GPUs when there are any), writes depth PNGs and previews to storage and
records them in batched upserts. Re-running skips finished work unless ``--all``; a crash loses
only the batches in flight, and the next run picks up the rest. Videos go to the queue instead
(their frames are batched by the Serve deployment there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import datetime

import numpy as np
import psycopg
import ray

from cluster.config.worker_env import yield_cpu_to_foreground
from cluster.model.contract import target_size
from cluster.media import configure_pillow
from cluster.media.decode import decode_for_model
from cluster.model.options import ModelOptions
from cluster.work.processing import store_depth_outputs
from cluster.config.settings import Settings
from cluster.storage import storage_from_settings
from db import depth as depth_maps
from db import queue
from db import reprocess as selection
from db.depth import NewDepthMap
from pipelines.job import job_main
from db.embedded import resolve_database_url
from db.vocabulary import KINDS, STATUSES


class Decode:
    """CPU stage: fetch originals and decode them near the model's input size."""

    def __init__(self, settings: Settings) -> None:
        yield_cpu_to_foreground()  # a bulk job, like the queue's depth work, is background
        configure_pillow()
        self.storage = storage_from_settings(settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"media_id": [], "image": [], "error": []}
        for media_id, key in zip(batch["media_id"], batch["storage_key"]):
            out["media_id"].append(media_id)
            try:
                out["image"].append(decode_for_model(self.storage.get_bytes(key)))
                out["error"].append("")
            except Exception as e:  # one bad file fails alone
                out["image"].append(np.zeros((1, 1, 3), np.uint8))
                out["error"].append(f"{type(e).__name__}: {e}"[:500])
        return out


class Infer:
    """Model stage (one model per actor): depth, encode, store; returns the rows to record."""

    def __init__(self, settings: Settings) -> None:
        self.core = ModelOptions.from_settings(settings).load()
        if self.core.device.type == "cpu":
            yield_cpu_to_foreground()  # as the depth replica: on a GPU the host work is small
        self.storage = storage_from_settings(settings)
        self.model_id = settings.model
        self.revision = settings.model_revision
        self.original_size = settings.depth_resolution == "original"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        ids, images, errors = list(batch["media_id"]), list(batch["image"]), list(batch["error"])
        todo = [i for i, e in enumerate(errors) if not e]
        sizes = [images[i].shape[:2] if self.original_size else target_size(*images[i].shape[:2])
                 for i in todo]
        results = self.core.predict([images[i] for i in todo], sizes)
        rows: dict[str, list] = {"media_id": [], "record": [], "error": []}
        for i, result in zip(todo, results):
            if not result.ok:
                errors[i] = result.error
                continue
            rows["media_id"].append(ids[i])
            rows["record"].append(json.dumps(self._store(uuid.UUID(ids[i]), result.depth)))
            rows["error"].append("")
        for i, error in enumerate(errors):
            if error:
                rows["media_id"].append(ids[i])
                rows["record"].append("")
                rows["error"].append(error)
        return rows

    def _store(self, media_id: uuid.UUID, depth: np.ndarray) -> list[dict]:
        maps = store_depth_outputs(self.storage, media_id, self.model_id, self.revision, depth)
        return [{**m.__dict__, "media_id": str(m.media_id)} for m in maps]


class Record:
    """Batched upserts of the outputs (one statement per batch) on one connection per actor."""

    def __init__(self, database_url: str, model_id: str) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.model_id = model_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        maps, done = [], []
        for media_id, record, error in zip(batch["media_id"], batch["record"], batch["error"]):
            if error:
                continue
            done.append(uuid.UUID(media_id))
            for row in json.loads(record):
                maps.append(NewDepthMap(**{**row, "media_id": uuid.UUID(row["media_id"])}))
        with self.conn.transaction():
            depth_maps.upsert_many(self.conn, maps)
            queue.close_failed_items(self.conn, done, self.model_id)
        return {"media_id": list(batch["media_id"]), "error": list(batch["error"])}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipelines.reprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model id (default DEPTHMILL_MODEL)")
    parser.add_argument("--kind", choices=KINDS)
    parser.add_argument("--status", choices=STATUSES,
                        help="only media whose queue item for the model has this status")
    parser.add_argument("--since", type=datetime.fromisoformat, help="uploaded on or after")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--missing-only", action="store_true", default=True,
                       help="only media without a depth map for the model (default)")
    which.add_argument("--all", action="store_true", help="reprocess even finished media")
    parser.add_argument("--dry-run", action="store_true", help="count, write nothing")
    parser.add_argument("--batch-size", type=int, default=16, help="images per model batch")
    parser.add_argument("--actors", type=int, default=None,
                        help="model actors (default one per GPU, or one per CPU without GPUs)")
    parser.add_argument("--decoders", type=int, default=4, help="most decoding actors")
    parser.add_argument("--num-gpus", type=float, default=None,
                        help="GPUs per model actor (default 1 if the cluster has GPUs, else 0)")
    parser.add_argument("--max-cpus", type=float, default=None,
                        help="cap on CPUs for decoding, to share the cluster with Serve")
    return parser


def run(settings: Settings, args: argparse.Namespace) -> dict:
    database_url, _embedded = resolve_database_url(settings.database_url, settings.home)
    settings = settings.model_copy(update={"database_url": database_url})
    model_id = settings.model
    query, params = selection.build_selection(
        model_id=model_id, kind=args.kind, status=args.status, since=args.since,
        missing_only=not args.all,
    )
    with psycopg.connect(database_url) as conn:
        counts = selection.count_selection(conn, query, params)
        rendered = query.as_string(conn)
    summary: dict = {"model": model_id, "selected": counts, "dry_run": args.dry_run}
    if args.dry_run:
        return summary

    started = time.perf_counter()
    # Videos: frames are batched best by the Serve deployment; hand them to the queue.
    if counts.get("video") and args.kind != "photo":
        with psycopg.connect(database_url, autocommit=True) as conn:
            rows = conn.execute(sql_videos(rendered), params).fetchall()
            queued = queue.enqueue_many(conn, [r[0] for r in rows], model_id,
                                        max_attempts=settings.max_attempts)
        summary["videos_queued"] = len(queued)
    if counts.get("photo") and args.kind != "video":
        summary.update(_run_photos(settings, rendered, params, args))
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def sql_videos(rendered: str) -> str:
    return f"SELECT media_id::uuid FROM ({rendered}) s WHERE kind = 'video'"


def _run_photos(settings: Settings, rendered: str, params: dict, args) -> dict:
    database_url = settings.database_url
    num_gpus = args.num_gpus
    if num_gpus is None:
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    actors = args.actors or model_actors(ray.cluster_resources(), num_gpus)
    photos_sql = f"SELECT * FROM ({rendered}) s WHERE kind = 'photo'"
    ds = ray.data.read_sql(
        photos_sql, lambda: psycopg.connect(database_url), sql_params=params,
        shard_keys=["shard"], shard_hash_fn="", override_num_blocks=4,
        # Fractional CPUs everywhere: the stages must fit beside each other (and beside Serve)
        # on a small machine, or the read waits forever for a CPU the actors hold.
        num_cpus=0.25,
    )
    if args.max_cpus:
        ray.data.DataContext.get_current().execution_options.resource_limits = (
            ray.data.ExecutionResources(cpu=args.max_cpus))
    ds = ds.map_batches(Decode, fn_constructor_args=(settings,), batch_size=args.batch_size,
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=args.decoders),
                        num_cpus=0.25)
    ds = ds.map_batches(Infer, fn_constructor_args=(settings,), batch_size=args.batch_size,
                        # Grown as work queues up, to what the cluster has free beside Serve.
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                        num_gpus=num_gpus, num_cpus=0.25 if num_gpus else 0.5)
    ds = ds.map_batches(Record, fn_constructor_args=(database_url, settings.model),
                        batch_size=64, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.1)
    processed = failed = 0
    errors: list[dict] = []
    for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
        for media_id, error in zip(batch["media_id"], batch["error"]):
            if error:
                failed += 1
                if len(errors) < 20:
                    errors.append({"media_id": str(media_id), "error": str(error)})
            else:
                processed += 1
    return {"photos_processed": processed, "photos_failed": failed, "errors": errors}


def model_actors(resources: dict[str, float], num_gpus: float) -> int:
    """Model actors that use the cluster: one per GPU (its share of one), or on CPUs one per
    CPU, since an actor's model runs on the one thread Ray gives a task of under a CPU, and a
    CPU gains nothing from batches."""
    if num_gpus:
        return max(1, int(resources.get("GPU", 0) / num_gpus))
    return max(1, int(resources.get("CPU", 1)))


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, build_parser(), run, failed=lambda s: bool(s.get("photos_failed")))


if __name__ == "__main__":
    sys.exit(main())
