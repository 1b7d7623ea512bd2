"""``depthmill process PATH...``: the whole system in one command, with a progress bar and a
summary table; non-zero exit when any item failed."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cluster import runtime
from cluster.ingest import IngestResult, ingest_file
from cluster.media.probe import PHOTO_FORMATS, VIDEO_CONTAINERS, MediaLimits, sniff
from cluster.config.settings import Settings
from cluster.storage import storage_from_settings
from db import depth as depth_maps
from db import queue
from db.connection import Database

TERMINAL = {"completed", "failed", "cancelled"}


MEDIA_SUFFIXES = {ext for _, ext in (*PHOTO_FORMATS.values(), *VIDEO_CONTAINERS.values())} | {
    ".jpeg", ".tif", ".heif", ".avif", ".m4v"}


def is_media(path: Path) -> bool:
    """Whether a file is a photo or video: by its name (so a broken photo is still reported, as
    a failure) or by its first bytes (probe's sniff, for media with an odd name)."""
    if path.suffix.lower() in MEDIA_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            return sniff(f.read(64)) is not None
    except OSError:
        return True  # unreadable: let ingest say why, as a failure


def collect(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """The files to process and, from folders, the ones skipped as not media (sidecars such as
    .xmp and .json, text, .DS_Store and other hidden files). A file named on the command line is
    always processed: asking for it and getting nothing is a failure."""
    files: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        if path.is_dir():
            for p in sorted(p for p in path.rglob("*") if p.is_file()):
                media = not p.name.startswith(".") and is_media(p)
                (files if media else skipped).append(p)
        else:
            files.append(path)
    return files, skipped


def process_paths(settings: Settings, paths: list[Path], console: Console, *, timeout: float) -> int:
    missing = [p for p in paths if not p.exists()]
    if missing:
        console.print(f"[red]no such file or folder:[/red] {', '.join(map(str, missing))}")
        return 2
    files, skipped = collect(paths)
    if skipped:
        console.print(f"skipped {len(skipped)} files that are not photos or videos: "
                      + ", ".join(str(p) for p in skipped), soft_wrap=True)
    if not files:
        console.print("no photos or videos to process")
        return 0
    try:
        runtime.check_model_loads(settings)  # before anything starts: one sentence, not a trace
        with console.status("starting depthmill (Postgres, Ray, Serve, scheduler)…"):
            running = runtime.up(settings, keep_postgres=False)
    except (runtime.ModelUnavailable, runtime.ModelConflict) as e:
        # up has stopped what it started; one sentence, not Serve's traceback.
        console.print(f"[red]{e}[/red]", soft_wrap=True)
        return 1
    settings = running.settings
    try:
        with Database(settings.database_url, max_size=2, name="process") as db:
            storage = storage_from_settings(settings)
            limits = MediaLimits.from_settings(settings)
            results = [
                ingest_file(f, db=db, storage=storage, settings=settings, limits=limits)
                for f in files
            ]
            final = _follow(db, results, console, timeout)
            return _report(db, storage, results, final, console)
    finally:
        if running.started_ray:
            runtime.down(settings)


def _follow(db: Database, results: list[IngestResult], console: Console, timeout: float) -> dict:
    items = {r.queue_item.id: r.queue_item for r in results if r.queue_item is not None}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    deadline = time.monotonic() + timeout
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("depth maps", total=len(items))
        while time.monotonic() < deadline:
            for item_id, item in items.items():
                if item.status not in TERMINAL:
                    items[item_id] = db.run(queue.get_item, item_id)
            done = sum(i.status in TERMINAL for i in items.values())
            progress.update(bar, completed=done)
            if done == len(items):
                break
            time.sleep(0.5)
    return items


def _report(db, storage, results, final, console: Console) -> int:
    table = Table(title="depthmill process")
    for column in ("file", "kind", "status", "depth map", "error"):
        table.add_column(column, overflow="fold")
    failed = 0
    for r in results:
        if r.queue_item is None:
            failed += 1
            table.add_row(r.name, "-", "[red]rejected[/red]", "", r.error)
            continue
        item = final[r.queue_item.id]
        location = ""
        if item.status == "completed":
            pngs = [m for m in db.run(depth_maps.for_media, item.media_id)
                    if m.format == "png16" and m.model_id == item.model_id]
            location = _location(storage, pngs[0].storage_key) if pngs else ""
        else:
            failed += 1
        style = {"completed": "green", "failed": "red"}.get(item.status, "yellow")
        table.add_row(r.name, item.kind, f"[{style}]{item.status}[/{style}]", location,
                      item.last_error if item.status != "completed" else "")
    console.print(table)
    console.print(f"{len(results) - failed} of {len(results)} files have depth maps")
    return 1 if failed else 0


def _location(storage, key: str) -> str:
    root = getattr(storage, "root", None)
    if root is not None:
        return str(root / key)
    return f"s3://{storage.bucket}/{key}"
