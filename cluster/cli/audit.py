"""``depthmill audit``: the audit log's newest entries, straight from the database."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rich.console import Console

from cluster.cli.keys import duration
from cluster.config.settings import Settings
from cluster.runtime import database_url
from db import audit
from db.connection import Database
from db.migrate import migrate
from db.vocabulary import MAX_PAGE_SIZE


def since(value: str) -> datetime:
    """An ISO date or time (UTC unless it says), or a lifetime back from now: ``2d``, ``6h``."""
    try:
        return datetime.now(UTC) - duration(value)
    except argparse.ArgumentTypeError:
        pass
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a time (2026-01-31, 2026-01-31T12:00) nor a span back from "
            "now (6h, 2d)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def limit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number from 1 to {MAX_PAGE_SIZE}")
    return int(value)


def run(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    with database_url(settings) as url, Database(url, max_size=1, name="audit-cli") as db:
        migrate(url)
        page = db.run(audit.page, since=args.since, key_name=args.key, limit=args.limit)
    if not page.items:
        console.print("no audit entries" + (" in that span" if args.since else ""))
        return 0
    for e in reversed(page.items):  # oldest first, like a log
        where = " ".join(x for x in (str(e.media_id) if e.media_id else "", e.target or "") if x)
        console.print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.status}  {e.method:<6} {e.route}  {where}  "
                      f"by {e.key_name} from {e.client}", soft_wrap=True, highlight=False,
                      markup=False)
    if page.next_cursor:
        console.print(f"(the newest {len(page.items)}; --limit for more, --since to narrow)")
    return 0


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser("audit", help="who changed what through the API, and what "
                                               "was refused")
    parser.add_argument("--since", type=since, metavar="WHEN",
                        help="a time (2026-01-31T12:00, UTC) or a span back from now (6h, 2d)")
    parser.add_argument("--key", metavar="NAME", help="only this key's entries ('env key', "
                                                      "'anonymous' too)")
    parser.add_argument("--limit", type=limit, default=50, help="newest entries shown (default 50)")
    return parser
