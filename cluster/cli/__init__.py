"""The ``depthmill`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cluster.config.models import ModelNotServed, served_models
from cluster.runtime import database_url
from cluster.config.settings import Settings
from cluster.media import configure_pillow
from db import queue
from db.connection import DatabaseUnavailable
from db.migrate import applied_versions, load_migrations, migrate

console = Console()


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    with database_url(settings) as url:
        applied = migrate(url)
    if applied:
        for m in applied:
            console.print(f"applied {m.version:03d}_{m.name}")
    else:
        console.print("database schema is up to date")
    return 0


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    with database_url(settings) as url:
        # A status reads; changing the schema is `migrate`'s, which a user runs knowingly.
        missing = {m.version for m in load_migrations()} - set(applied_versions(url))
        if missing:
            console.print(f"[red]the database schema is {len(missing)} migration(s) behind:[/red] "
                          "run `depthmill migrate`, then `depthmill status` again")
            return 1
        with psycopg.connect(url) as conn:
            stats = queue.stats(conn)
    report = {
        "database": "embedded" if settings.database_url is None else "external",
        "queue": stats.status_counts(),
        "by_kind": {status: counts for status, counts in stats.counts.items()},
        "throughput_per_minute": stats.throughput_per_minute,
        "eta_seconds": stats.eta_seconds,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table(title=f"depthmill queue ({report['database']} Postgres)")
    table.add_column("status")
    table.add_column("photos", justify="right")
    table.add_column("videos", justify="right")
    for status, counts in stats.counts.items():
        table.add_row(status, str(counts["photo"]), str(counts["video"]))
    console.print(table)
    eta = "unknown" if stats.eta_seconds is None else f"{stats.eta_seconds:.0f} s"
    console.print(f"throughput {stats.throughput_per_minute:.1f}/min, ETA {eta}")
    return 0


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from cluster import runtime

    if args.model:
        try:
            settings = settings.with_model(args.model)
        except ModelNotServed as e:
            console.print(f"[red]{escape(str(e))}[/red] (DEPTHMILL_MODELS)", soft_wrap=True)
            return 2
    if args.tls and not settings.tls_certfile:
        from cluster.config.tls import self_signed
        from cluster.config.network import lan_addresses

        cert, key = self_signed(settings.home / "tls", lan_addresses())
        settings = settings.model_copy(update={"tls_certfile": cert, "tls_keyfile": key})
    for path in (settings.tls_certfile, settings.tls_keyfile):
        if path is not None and not path.is_file():
            console.print(f"[red]TLS file {path} does not exist: check DEPTHMILL_TLS_CERTFILE and "
                          "DEPTHMILL_TLS_KEYFILE, or use --tls for a self-signed certificate[/red]")
            return 1
    try:
        with console.status("starting depthmill (Postgres, Ray, Serve, scheduler)…"):
            running = runtime.up(settings, port=args.port, keep_postgres=args.detach)
    except (runtime.ModelConflict, runtime.ModelUnavailable) as e:
        console.print(f"[red]{e}[/red]", soft_wrap=True)
        return 1  # what was already running stays up, untouched
    served = served_models(running.settings)
    which = (f"model {running.settings.model}" if len(served) == 1 else
             f"models {', '.join(served)}; default {running.settings.model}")
    console.print(f"[green]depthmill is up[/green] ({escape(which)})")
    console.print(f"  web app    {running.api_url}/")
    console.print(f"  API        {running.api_url}/api")
    console.print(f"  docs       {running.api_url}/docs")
    console.print(f"  dashboard  {running.dashboard_url or 'not available'}")
    if args.detach:
        return 0
    console.print("Ctrl-C stops it.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping…")
        for line in runtime.down(settings):
            console.print(f"  {line}")
    return 0


def _cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from cluster import runtime

    done = runtime.down(settings)
    for line in done or ["nothing was running"]:
        console.print(line)
    return 0


def _cmd_process(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.cli.process import process_paths

    from cluster.media.exports import parse_layouts

    if args.model:  # the model of the items this command queues
        try:
            settings = settings.with_model(args.model)
        except ModelNotServed as e:
            console.print(f"[red]{escape(str(e))}[/red] (DEPTHMILL_MODELS)", soft_wrap=True)
            return 2
    try:
        layouts = parse_layouts(args.layout)
    except ValueError as e:
        console.print(f"[red]{e}[/red]", soft_wrap=True)
        return 2
    if layouts and args.out is None:
        console.print("[red]--layout says which stereo renders to export: give --out DIR "
                      "for them to go to[/red]", soft_wrap=True)
        return 2
    return process_paths(settings, [Path(p) for p in args.paths], console, timeout=args.timeout,
                         out=args.out, layouts=layouts)


def _cmd_reprocess(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.cli.reprocess import submit_reprocess

    return submit_reprocess(settings, args.address, args.filters, working_dir=args.working_dir,
                            echo=console.print)


def _cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.cli.reprocess import export_args, submit_job
    from cluster.media.exports import parse_layouts

    try:
        args.layouts = parse_layouts(args.layout)
    except ValueError as e:
        console.print(f"[red]{e}[/red]", soft_wrap=True)
        return 2
    if args.to.startswith("s3://") and not args.to[5:].split("/")[0]:
        console.print(f"[red]{args.to!r} names no bucket: give s3://bucket/prefix[/red]")
        return 2
    if not args.to.startswith("s3://"):
        # The job's workers write there: hand them an absolute path.
        args.to = str(Path(args.to).expanduser().resolve())
    return submit_job(settings, args.address, "pipelines.export", export_args(args),
                      working_dir=args.working_dir, echo=console.print)


def _cmd_sweep(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.storage import storage_from_settings
    from cluster.storage.sweep import sweep
    from db.connection import Database

    storage = storage_from_settings(settings)
    with database_url(settings) as url, Database(url, max_size=1, name="sweep") as db:
        migrate(url)
        report = sweep(db, storage, older_than_s=args.older_than, dry_run=args.dry_run)
    for key in report.orphans:
        console.print(f"  {'would remove' if args.dry_run else 'orphan'} {key}")
    done = f"{len(report.orphans)} orphaned" if args.dry_run else f"removed {report.removed}"
    console.print(f"scanned {report.scanned} objects: {done}")
    return 0


def _cmd_webhooks(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.cli import webhooks

    return webhooks.run(settings, args, console)


def _cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.cli import keys

    return keys.run(settings, args, console)


def _cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from cluster.cli import audit

    return audit.run(settings, args, console)


def _seconds(value: str) -> float:
    seconds = float(value)
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value}: give a number of seconds, 0 or more")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthmill", description="Turn photos and videos into depth maps, at cluster scale."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply database migrations").set_defaults(run=_cmd_migrate)

    status = commands.add_parser("status", help="show the queue")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=_cmd_status)

    up = commands.add_parser("up", help="start Postgres, Ray, the Serve app and the scheduler")
    up.add_argument("--model", help="Hugging Face id, local directory or `tiny`; with "
                    "DEPTHMILL_MODELS, which of them is the default")
    up.add_argument("--port", type=int, help="HTTP port (default DEPTHMILL_PORT, 8000)")
    up.add_argument("--detach", action="store_true", help="return once it is up")
    up.add_argument("--tls", action="store_true",
                    help="serve https with a self-signed certificate kept under DEPTHMILL_HOME (for headsets)")
    up.set_defaults(run=_cmd_up)

    commands.add_parser("down", help="stop what `up` started").set_defaults(run=_cmd_down)

    process = commands.add_parser(
        "process", help="turn files and folders into depth maps, end to end, then report"
    )
    process.add_argument("paths", nargs="+", help="photos, videos and folders")
    process.add_argument("--model", help="Hugging Face id, local directory or `tiny`; with "
                         "DEPTHMILL_MODELS, which of them processes these files")
    process.add_argument("--timeout", type=float, default=24 * 3600, help="give up after seconds")
    process.add_argument("--out", type=Path, metavar="DIR",
                         help="export each file's depth (and --layout renders) here under its "
                              "own name, in its folder relative to the PATH it came from")
    process.add_argument("--layout", action="append", metavar="L[,L...]",
                         help="stereo layouts to export with --out: sbs, sbs-half, tb, tb-half, "
                              "crosseye, anaglyph, rgbd")
    process.set_defaults(run=_cmd_process)

    reprocess = commands.add_parser(
        "reprocess", help="submit the Ray Data reprocess job and follow it",
        description="Filters are passed to `python -m pipelines.reprocess` (see its --help): "
        "--model M --kind photo|video --status S --since DATE --missing-only|--all --dry-run",
    )
    reprocess.add_argument("--address", help="Ray dashboard URL (default RAY_ADDRESS or "
                           "http://127.0.0.1:8265)")
    reprocess.add_argument("--working-dir", help="ship this directory with the job")
    reprocess.set_defaults(run=_cmd_reprocess)

    export = commands.add_parser(
        "export", help="submit the Ray Data export job (real names, stereo layouts) and follow it",
        description="Writes <name>.depth.png, <name>.depth.webp and <name>_<LAYOUT>.jpg for each "
        "selected photo (<name>.depth.mp4 for a video) to a directory or an S3 prefix, skipping "
        "what is already there.",
    )
    export.add_argument("--to", required=True, metavar="DIR|s3://bucket/prefix")
    export.add_argument("--layout", action="append", metavar="L[,L...]",
                        help="stereo layouts: sbs, sbs-half, tb, tb-half, crosseye, anaglyph, rgbd")
    export.add_argument("--kind", choices=["photo", "video"])
    export.add_argument("--status", help="only media whose queue item has this status "
                                         "(e.g. completed)")
    export.add_argument("--since", help="uploaded on or after (ISO date)")
    export.add_argument("--model", help="whose depth maps (default DEPTHMILL_MODEL)")
    export.add_argument("--s3-endpoint", help="S3 endpoint of --to (default DEPTHMILL_S3_ENDPOINT)")
    export.add_argument("--workers", type=int, help="most export actors (default 2)")
    export.add_argument("--max-cpus", type=float, help="cap on the job's CPUs")
    export.add_argument("--address", help="Ray dashboard URL (default RAY_ADDRESS or "
                        "http://127.0.0.1:8265)")
    export.add_argument("--working-dir", help="ship this directory with the job")
    export.set_defaults(run=_cmd_export)

    sweep = commands.add_parser(
        "sweep", help="remove stored objects whose media rows are gone",
        description="Objects outlive their rows when a process dies between deleting the two, "
        "or between storing an upload and recording it. Only objects older than --older-than "
        "are touched, so uploads in progress are safe.",
    )
    sweep.add_argument("--older-than", type=_seconds, default=3600, metavar="SECONDS",
                       help="only objects last written this long ago (default 3600)")
    sweep.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    sweep.set_defaults(run=_cmd_sweep)

    from cluster.cli.webhooks import add_parser as add_webhooks_parser

    add_webhooks_parser(commands).set_defaults(run=_cmd_webhooks)
    from cluster.cli.keys import add_parser as add_keys_parser

    add_keys_parser(commands).set_defaults(run=_cmd_keys)
    from cluster.cli.audit import add_parser as add_audit_parser

    add_audit_parser(commands).set_defaults(run=_cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # `reprocess` forwards its filters to the job untouched; every other command is strict.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "reprocess":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.filters = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    configure_pillow()
    try:
        settings = Settings()
    except ValueError as exc:
        console.print(f"[red]invalid configuration:[/red] {exc}")
        return 2
    try:
        return args.run(settings, args)
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        console.print(f"[red]database unavailable:[/red] {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
