"""``depthmill webhooks add|list|remove|test``: webhook endpoints, straight in the database (like
``status`` and ``sweep``), so they work whether or not the cluster is up; the deliverer sends
what they queue once it runs. The URL goes through the same address policy as the API's."""

from __future__ import annotations

import argparse
import uuid

from rich.console import Console
from rich.table import Table

from cluster.config.settings import Settings
from cluster.events import signing
from cluster.events.addresses import InvalidUrl, UnsafeDestination, check_url
from cluster.runtime import database_url
from db import webhooks
from db.connection import Database
from db.errors import NotFound
from db.migrate import migrate


def _hook_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a webhook id: copy one from `depthmill webhooks list`") from None


def run(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    try:
        if args.webhooks_command == "add":
            # Checked before the database is touched: a refused URL needs no Postgres.
            check_url(args.url, allow_private=settings.webhook_allow_private)
        with database_url(settings) as url, Database(url, max_size=1, name="webhooks-cli") as db:
            migrate(url)
            return _COMMANDS[args.webhooks_command](db, args, console)
    except InvalidUrl as e:
        console.print(f"[red]{e}[/red]: give an http(s) URL such as https://example.com/hook",
                      soft_wrap=True)
        return 2
    except UnsafeDestination as e:
        console.print(f"[red]{e}[/red]: give a public http(s) URL, or set "
                      "DEPTHMILL_WEBHOOK_ALLOW_PRIVATE=true for a receiver on your own network",
                      soft_wrap=True)
        return 2
    except ValueError as e:  # an unknown event type
        console.print(f"[red]{e}[/red]", soft_wrap=True)
        return 2
    except NotFound as e:
        console.print(f"[red]{e}[/red]: see `depthmill webhooks list` for the ids there are",
                      soft_wrap=True)
        return 1


def _add(db: Database, args: argparse.Namespace, console: Console) -> int:
    patterns = [p.strip() for p in args.events.split(",") if p.strip()]
    if not patterns:
        raise ValueError("--events names no event type: give e.g. item.completed,item.failed")
    secret = signing.new_secret()
    hook = db.run(webhooks.create, args.url, patterns, secret, args.description)
    console.print(f"added webhook [bold]{hook.id}[/bold] → {hook.url} ({', '.join(hook.events)})")
    console.print(f"signing secret (shown once, keep it): {secret}", soft_wrap=True)
    return 0


def _list(db: Database, args: argparse.Namespace, console: Console) -> int:
    hooks = db.run(webhooks.list_webhooks)
    if not hooks:
        console.print("no webhooks: add one with `depthmill webhooks add URL --events ...`")
        return 0
    table = Table(title="webhooks")
    table.add_column("id", no_wrap=True)  # copied into `remove` and `test` whole
    for column in ("url", "events", "enabled", "note"):
        table.add_column(column, overflow="fold")
    for h in hooks:
        note = h.disabled_reason or (f"failing since {h.failing_since:%Y-%m-%d %H:%M}"
                                     if h.failing_since else h.description or "")
        table.add_row(str(h.id), h.url, ", ".join(h.events), "yes" if h.enabled else "no", note)
    console.print(table)
    return 0


def _remove(db: Database, args: argparse.Namespace, console: Console) -> int:
    db.run(webhooks.delete, args.id)
    console.print(f"removed webhook {args.id} and its deliveries")
    return 0


def _test(db: Database, args: argparse.Namespace, console: Console) -> int:
    d = db.run(webhooks.send_test, args.id)
    console.print(f"queued webhook.test delivery {d.id} (event evt_{d.event_id}); the deliverer "
                  "sends it while depthmill is up: `depthmill webhooks list` shows the endpoint's "
                  "health")
    return 0


_COMMANDS = {"add": _add, "list": _list, "remove": _remove, "test": _test}


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser("webhooks", help="add, list, remove and test webhook endpoints")
    sub = parser.add_subparsers(dest="webhooks_command", required=True)
    add = sub.add_parser("add", help="subscribe a URL to events (prints its signing secret once)")
    add.add_argument("url", help="the receiver's http(s) URL")
    add.add_argument("--events", required=True, metavar="TYPE[,TYPE...]",
                     help="event types, families (item.*) or *; e.g. item.completed,item.failed")
    add.add_argument("--description", help="a note for yourself")
    sub.add_parser("list", help="every endpoint, enabled or not, and why")
    remove = sub.add_parser("remove", help="delete an endpoint and its deliveries")
    remove.add_argument("id", type=_hook_id)
    test = sub.add_parser("test", help="send the endpoint a webhook.test event")
    test.add_argument("id", type=_hook_id)
    return parser
