"""``depthmill process PATH...``: the whole system in one command, with a progress bar and a
summary table; non-zero exit when any item failed."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cluster import runtime
from cluster.ingest import IngestResult, ingest_file
from cluster.media import exports
from cluster.media.malware import ScannerUnavailable
from cluster.media.probe import PHOTO_FORMATS, VIDEO_CONTAINERS, MediaLimits, sniff
from cluster.config.settings import Settings
from cluster.storage import storage_from_settings
from cluster.work.exports import depth_keys, export_stored
from db import depth as depth_maps
from db import media, queue
from db.connection import Database
from db.vocabulary import FINAL_STATUSES

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


def folder_within(file: Path, paths: list[Path]) -> str:
    """The folder of ``file`` relative to the PATH argument it was found under ("" for a file
    named itself), '/'-separated: where its exports go under ``--out``."""
    for path in paths:
        if path.is_dir():
            try:
                folder = file.parent.relative_to(path).as_posix()
            except ValueError:
                continue
            return "" if folder == "." else folder
    return ""


def process_paths(settings: Settings, paths: list[Path], console: Console, *, timeout: float,
                  out: Path | None = None, layouts: tuple[str, ...] = ()) -> int:
    """Ingest ``paths``, wait for their depth maps, report; with ``out``, export each file's
    outputs (and the stereo ``layouts``) under its name there, in its folder relative to the
    PATH it came from."""
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
            try:
                results = [
                    ingest_file(f, db=db, storage=storage, settings=settings, limits=limits)
                    for f in files
                ]
            except ScannerUnavailable as e:  # DEPTHMILL_CLAMD_UNAVAILABLE=refuse
                console.print(f"[red]{escape(str(e))}[/red]: files not scanned are not "
                              "processed (DEPTHMILL_CLAMD_UNAVAILABLE=refuse)", soft_wrap=True)
                return 1
            final = _follow(db, results, console, timeout)
            exported = labels = None
            if out is not None:
                folders = [folder_within(f, paths) for f in files]
                exported = _export(db, storage, results, final, files, folders, out, layouts,
                                   console)
                labels = [f"{folder}/{f.name}" if folder else f.name
                          for folder, f in zip(folders, files)]
            return _report(db, storage, results, final, console, exported, out, layouts, labels)
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
                if item.status not in FINAL_STATUSES:
                    items[item_id] = db.run(queue.get_item, item_id)
            done = sum(i.status in FINAL_STATUSES for i in items.values())
            progress.update(bar, completed=done)
            if done == len(items):
                break
            time.sleep(0.5)
    return items


def _export(db, storage, results, final, files, folders, out: Path, layouts, console):
    """Each completed item's exports under ``out``: index in ``results`` → the exports, or the
    error that stopped them."""
    target = exports.LocalTarget(out)
    todo = [i for i, r in enumerate(results)
            if r.queue_item is not None and final[r.queue_item.id].status == "completed"]
    stems = dict(zip(todo, exports.plan_stems(
        (folders[i], files[i].name, results[i].queue_item.media_id) for i in todo)))
    done: dict[int, list[exports.Exported] | str] = {}
    with console.status(f"exporting to {out}…"):
        for i in todo:
            item = final[results[i].queue_item.id]
            try:
                stored = db.run(media.get, item.media_id)
                keys = depth_keys(db.run(depth_maps.for_media, item.media_id), item.model_id)
                done[i] = export_stored(storage, target, stem=stems[i], kind=stored.kind,
                                        media_id=stored.id, original_key=stored.storage_key,
                                        keys=keys, layouts=layouts)
            except Exception as e:  # one export fails alone, and says why
                done[i] = f"export failed: {type(e).__name__}: {e}"
    return done


# Widths that keep the table inside 80 columns with its borders.
NAME_WIDTH = 22
EXPORT_WIDTH = 34


def _report(db, storage, results, final, console: Console, exported=None, out=None,
            layouts: tuple[str, ...] = (), labels: list[str] | None = None) -> int:
    table = Table(title="depthmill process")
    columns = ("file", "kind", "status", "depth map", "error")
    if exported is not None:
        columns = ("file", "kind", "status", "exported (under DIR)")
    for column in columns:
        table.add_column(column, overflow="fold")
    failed = export_failed = written = present = 0
    for i, r in enumerate(results):
        name = r.name if labels is None else exports.shorten_middle(labels[i], NAME_WIDTH)
        if r.queue_item is None:
            failed += 1
            table.add_row(name, "-", "[red]rejected[/red]", "", r.error)
            continue
        item = final[r.queue_item.id]
        location = ""
        if item.status == "completed":
            if exported is None:
                pngs = [m for m in db.run(depth_maps.for_media, item.media_id)
                        if m.format == "png16" and m.model_id == item.model_id]
                location = _location(storage, pngs[0].storage_key) if pngs else ""
        else:
            failed += 1
        style = {"completed": "green", "failed": "red"}.get(item.status, "yellow")
        status = f"[{style}]{item.status}[/{style}]"
        error = item.last_error if item.status != "completed" else ""
        if exported is None:
            table.add_row(name, item.kind, status, location, error)
            continue
        done = exported.get(i)
        if isinstance(done, str):
            export_failed += 1
            cell = f"[red]{escape(done)}[/red]"
        elif done is None:
            cell = f"[red]{escape(error)}[/red]" if error else ""
        else:
            written += sum(d.written for d in done)
            present += sum(not d.written for d in done)
            lines = [exports.shorten_middle(d.path, EXPORT_WIDTH) for d in done]
            cell = "\n".join(lines)
        table.add_row(name, item.kind, status, cell)
    console.print(table)
    console.print(f"{len(results) - failed} of {len(results)} files have depth maps")
    if exported is not None:
        console.print(f"{written} files written, {present} already there"
                      + (f", {export_failed} failed" if export_failed else "") + f", under {out}")
    return 1 if failed or export_failed else 0


def _location(storage, key: str) -> str:
    root = getattr(storage, "root", None)
    if root is not None:
        return str(root / key)
    return f"s3://{storage.bucket}/{key}"
