"""Bulk export under real names as a Ray Data job:

    ray job submit --working-dir . -- python -m pipelines.export --to DIR|s3://bucket/prefix \\
        [--layout sbs,anaglyph] [--kind photo|video] [--status completed] [--since DATE]
    depthmill export ...                         # the same, through the Ray Jobs SDK

Selects the media that have the model's outputs from Postgres (``read_sql``, sharded) and writes
each one's ``<name>.depth.png``, ``<name>.depth.webp`` and stereo renders (``<name>_SBS.jpg``,
...; videos: ``<name>.depth.mp4`` and ``<name>_SBS.mp4``, ...) to a directory or an S3 prefix,
flat, under the original's base name (see ``cluster.media.exports``). Names that collide get the media id: the driver reads
the selection's names once, oldest first, so the first upload of a name keeps it, whichever
shard it is read in. Re-running skips what is already there: a crash loses only the items in
flight. A directory is a path on the workers' machines: use S3 for a cluster of several nodes.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psycopg
import ray

from cluster.config.settings import Settings
from cluster.config.worker_env import yield_cpu_to_foreground
from cluster.media import configure_pillow, exports
from cluster.storage import S3Storage, storage_from_settings
from cluster.work.exports import FORMATS as EXPORTED_FORMATS
from cluster.work.exports import export_stored
from db import exports as selection
from db.embedded import resolve_database_url
from pipelines.job import job_main
from db.vocabulary import KINDS, STATUSES


def _content_type(path: str) -> str:
    return {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg",
            "mp4": "video/mp4"}.get(path.rsplit(".", 1)[-1], "application/octet-stream")


class S3Target:
    """An S3 prefix (any S3-compatible server): ``put_object`` is whole or nothing."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str = "us-east-1", sse: str = "off",
                 sse_kms_key_id: str | None = None) -> None:
        from botocore.exceptions import ClientError

        self._client_error = ClientError
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # The storage backend's client (its retries, timeouts and path-style addressing) and its
        # write arguments (the encryption setting).
        self._storage = S3Storage(bucket, endpoint_url=endpoint_url, region=region, sse=sse,
                                  sse_kms_key_id=sse_kms_key_id)
        self.client = self._storage.client

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def size(self, path: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(path))["ContentLength"]
        except self._client_error as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def write(self, path: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data,
                               **self._storage.write_args(_content_type(path)))

    def write_file(self, path: str, local: Path) -> None:
        # upload_file: multipart for large files; the object appears only when it is complete.
        self.client.upload_file(str(local), self.bucket, self._key(path),
                                ExtraArgs=self._storage.write_args(_content_type(path)))

    def describe(self, path: str) -> str:
        return f"s3://{self.bucket}/{self._key(path)}"


def target_for(to: str, *, s3_endpoint: str | None = None, s3_region: str = "us-east-1",
               s3_sse: str = "off", s3_sse_kms_key_id: str | None = None):
    """``s3://bucket/prefix`` or a directory."""
    if to.startswith("s3://"):
        parsed = urlparse(to)
        if not parsed.netloc:
            raise ValueError(f"{to!r} names no bucket: give s3://bucket/prefix")
        return S3Target(parsed.netloc, parsed.path, endpoint_url=s3_endpoint, region=s3_region,
                        sse=s3_sse, sse_kms_key_id=s3_sse_kms_key_id)
    from pathlib import Path

    return exports.LocalTarget(Path(to).expanduser().resolve())


def _target_settings(settings: Settings, s3_endpoint: str | None) -> dict:
    # Exports are objects depthmill writes: they are encrypted like its own.
    return dict(s3_endpoint=s3_endpoint, s3_region=settings.s3_region, s3_sse=settings.s3_sse,
                s3_sse_kms_key_id=settings.s3_sse_kms_key_id)


def suffixed_ids(rows) -> set[str]:
    """The media whose name is taken by an earlier upload (``rows`` oldest first)."""
    rows = list(rows)
    stems = exports.plan_stems(("", name, media_id) for media_id, name in rows)
    return {str(media_id) for (media_id, name), stem in zip(rows, stems)
            if name and stem != exports.stem_for(name, media_id, disambiguate=False)}


class Export:
    """One actor's share: read each item's outputs from storage, write its exports."""

    def __init__(self, settings: Settings, to: str, s3_endpoint: str | None,
                 layouts: tuple[str, ...], suffixed: set[str]) -> None:
        yield_cpu_to_foreground()  # background work, like the queue's
        configure_pillow()
        self.storage = storage_from_settings(settings)
        self.target = target_for(to, **_target_settings(settings, s3_endpoint))
        self.layouts = layouts
        self.suffixed = suffixed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"media_id": [], "written": [], "present": [], "error": []}
        for i, media_id in enumerate(batch["media_id"]):
            media_id = str(media_id)
            keys = {fmt: batch[f"{fmt}_key"][i] for fmt in EXPORTED_FORMATS
                    if batch[f"{fmt}_key"][i]}
            name = batch["original_name"][i] or None
            stem = exports.stem_for(name, media_id, disambiguate=media_id in self.suffixed)
            out["media_id"].append(media_id)
            try:
                done = export_stored(self.storage, self.target, stem=stem,
                                     kind=str(batch["kind"][i]), media_id=media_id,
                                     original_key=batch["storage_key"][i], keys=keys,
                                     layouts=self.layouts)
                out["written"].append(sum(d.written for d in done))
                out["present"].append(sum(not d.written for d in done))
                out["error"].append("")
            except Exception as e:  # one item fails alone
                out["written"].append(0)
                out["present"].append(0)
                out["error"].append(f"{type(e).__name__}: {e}"[:500])
        return out


def _layouts(text: str) -> tuple[str, ...]:
    try:
        return exports.parse_layouts(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipelines.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", required=True, metavar="DIR|s3://bucket/prefix")
    parser.add_argument("--layout", type=_layouts, action="append", default=[],
                        metavar="L[,L...]", help=f"stereo layouts: {', '.join(exports.LAYOUT_SUFFIXES)}")
    parser.add_argument("--model", help="model id (default DEPTHMILL_MODEL)")
    parser.add_argument("--kind", choices=KINDS)
    parser.add_argument("--status", choices=STATUSES,
                        help="only media whose queue item for the model has this status")
    parser.add_argument("--since", type=datetime.fromisoformat, help="uploaded on or after")
    parser.add_argument("--s3-endpoint", help="S3 endpoint of --to (default DEPTHMILL_S3_ENDPOINT)")
    parser.add_argument("--batch-size", type=int, default=8, help="items per batch")
    parser.add_argument("--workers", type=int, default=2, help="most export actors")
    parser.add_argument("--max-cpus", type=float, default=None,
                        help="cap on CPUs for the job, to share the cluster with Serve")
    return parser


def run(settings: Settings, args: argparse.Namespace) -> dict:
    database_url, _embedded = resolve_database_url(settings.database_url, settings.home)
    settings = settings.model_copy(update={"database_url": database_url})
    layouts = tuple(dict.fromkeys(layout for group in args.layout for layout in group))
    s3_endpoint = args.s3_endpoint or settings.s3_endpoint
    query, params = selection.build_selection(model_id=settings.model, kind=args.kind,
                                              status=args.status, since=args.since)
    started = time.perf_counter()
    with psycopg.connect(database_url) as conn:
        rendered = query.as_string(conn)
        suffixed = suffixed_ids(selection.names_in_order(conn, query, params))
    summary: dict = {"model": settings.model, "to": args.to, "layouts": list(layouts),
                     "items": 0, "files_written": 0, "files_present": 0, "failed": 0,
                     "errors": []}
    # Fail here, once, rather than in every actor (no bucket, a directory that cannot be made).
    target_for(args.to, **_target_settings(settings, s3_endpoint))
    if args.max_cpus:
        ray.data.DataContext.get_current().execution_options.resource_limits = (
            ray.data.ExecutionResources(cpu=args.max_cpus))
    ds = ray.data.read_sql(
        rendered, lambda: psycopg.connect(database_url), sql_params=params,
        shard_keys=["shard"], shard_hash_fn="", override_num_blocks=4, num_cpus=0.25,
    )
    ds = ds.map_batches(Export, fn_constructor_args=(settings, args.to, s3_endpoint, layouts,
                                                     suffixed),
                        batch_size=args.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=args.workers),
                        num_cpus=0.5)
    for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
        for media_id, written, present, error in zip(batch["media_id"], batch["written"],
                                                     batch["present"], batch["error"]):
            summary["items"] += 1
            summary["files_written"] += int(written)
            summary["files_present"] += int(present)
            if error:
                summary["failed"] += 1
                if len(summary["errors"]) < 20:
                    summary["errors"].append({"media_id": str(media_id), "error": str(error)})
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, build_parser(), run, failed=lambda s: bool(s["failed"]))


if __name__ == "__main__":
    sys.exit(main())
