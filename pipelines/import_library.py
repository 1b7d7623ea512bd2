"""Register an existing library (a folder, or an S3 prefix ``s3://bucket/prefix``) as media and
queue items in bulk, deduplicated by content, for users moving from another gallery.

    python -m pipelines.import_library ~/Pictures
    ray job submit --working-dir . -- python -m pipelines.import_library s3://photos/2024/

Originals are copied into depthmill's storage (content-addressed); bad files are reported and
skipped; running it twice adds nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

from cluster.ingest import IngestResult, ingest_file, ingest_stream
from cluster.media import configure_pillow
from cluster.media.malware import ScannerUnavailable
from cluster.media.probe import MediaLimits
from cluster.config.settings import Settings
from cluster.storage import storage_from_settings
from db.connection import Database
from db.embedded import resolve_database_url
from db.migrate import migrate


def local_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            yield path


def s3_objects(url: str, endpoint: str | None, region: str) -> Iterator[tuple[str, object]]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield obj["Key"], client
    return


def import_library(source: str, settings: Settings, *, workers: int = 4,
                   s3_endpoint: str | None = None) -> dict:
    database_url, _embedded = resolve_database_url(settings.database_url, settings.home)
    migrate(database_url)
    settings = settings.model_copy(update={"database_url": database_url})
    storage = storage_from_settings(settings)
    limits = MediaLimits.from_settings(settings)
    outcomes: Counter[str] = Counter()
    rejected: list[dict] = []
    with Database(database_url, max_size=workers + 1, name="import") as db:
        common = dict(db=db, storage=storage, settings=settings, limits=limits)

        def one_local(path: Path) -> IngestResult:
            return ingest_file(path, **common)

        def one_s3(entry) -> IngestResult:
            key, client = entry
            bucket = source.removeprefix("s3://").partition("/")[0]
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            return ingest_stream(body, key, **common)

        if source.startswith("s3://"):
            items, work = s3_objects(source, s3_endpoint or settings.s3_endpoint, settings.s3_region), one_s3
        else:
            items, work = local_files(Path(source).expanduser()), one_local
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(work, items):
                outcomes[result.status] += 1
                if result.status == "rejected" and len(rejected) < 100:
                    rejected.append({"file": result.name, "code": result.error_code,
                                     "error": result.error})
    return {"source": source, **{k: outcomes.get(k, 0) for k in ("created", "duplicate", "rejected")},
            "rejected_files": rejected}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines.import_library", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a folder, a file, or s3://bucket/prefix")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--s3-endpoint", help="S3 endpoint of the source bucket (MinIO)")
    args = parser.parse_args(argv)
    configure_pillow()
    if not args.source.startswith("s3://") and not Path(args.source).expanduser().exists():
        print(f"no such file or folder: {args.source}", file=sys.stderr)
        return 2
    try:
        summary = import_library(args.source, Settings.for_job(), workers=args.workers,
                                 s3_endpoint=args.s3_endpoint)
    except ScannerUnavailable as e:  # DEPTHMILL_CLAMD_UNAVAILABLE=refuse; a rerun adds the rest
        print(f"{e}: the import stopped; files not scanned are not imported", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
