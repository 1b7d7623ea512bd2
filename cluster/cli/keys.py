"""``depthmill keys create|list|revoke``: API keys, straight in the database (like ``webhooks``),
so an operator can make the first key before anything is up. Hashes are made with the same
server secret the gateway uses (``DEPTHMILL_SIGNING_SECRET``, else the one under HOME), so run
it with the gateway's settings."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from rich.console import Console

from cluster.config.settings import Settings
from cluster.runtime import database_url
from cluster.storage import server_signer
from db import keys
from db.connection import Database
from db.errors import NotFound
from db.migrate import migrate

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(value: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w``: how long a key lives."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", value)
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a lifetime: give a number and a unit, e.g. 90d, 12h, 30m or 2w")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def scopes(value: str) -> list[str]:
    try:
        return keys.check_scopes([s.strip() for s in value.split(",") if s.strip()])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    with database_url(settings) as url, Database(url, max_size=1, name="keys-cli") as db:
        migrate(url)
        try:
            return _COMMANDS[args.keys_command](settings, db, args, console)
        except keys.NameTaken as e:
            console.print(f"[red]{e}[/red]", soft_wrap=True)
            return 1
        except NotFound as e:
            console.print(f"[red]{e}[/red]: see `depthmill keys list`", soft_wrap=True)
            return 1


def _create(settings: Settings, db: Database, args: argparse.Namespace, console: Console) -> int:
    expires = datetime.now(UTC) + args.expires if args.expires else None
    secret = server_signer(settings).api_key_secret()
    made, key = db.run(keys.create, secret, args.name, args.scope, expires)
    until = f", expires {made.expires_at:%Y-%m-%d %H:%M} UTC" if made.expires_at else ""
    console.print(f"made key [bold]{made.name}[/bold] ({', '.join(made.scopes)}{until}); "
                  "the API now needs a key on every route but health and signed files")
    # Plain print: the key on a line of its own, unwrapped, for copying and for scripts.
    console.print("the key (shown once, keep it):")
    print(key)
    return 0


def _list(settings: Settings, db: Database, args: argparse.Namespace, console: Console) -> int:
    found = db.run(keys.list_keys)
    if not found:
        console.print("no keys: make one with `depthmill keys create --name N --scope read`")
        return 0
    now = datetime.now(UTC)

    def when(t: datetime | None, never: str) -> str:
        return f"{t:%Y-%m-%d %H:%M}" if t else never

    # A line per key rather than a table: ids and prefixes are copied whole, on any width.
    for k in found:
        state = ("revoked" if k.revoked_at else "expired" if not k.usable_at(now) else "live")
        console.print(f"[bold]{k.name}[/bold]  dm_{k.prefix}_…  {','.join(k.scopes)}  {state}  "
                      f"created {when(k.created_at, '')}  last used {when(k.last_used_at, 'never')}"
                      f"  expires {when(k.expires_at, 'never')}  id {k.id}",
                      soft_wrap=True, highlight=False)
    return 0


def _revoke(settings: Settings, db: Database, args: argparse.Namespace, console: Console) -> int:
    k = db.run(keys.revoke, args.key)
    console.print(f"revoked key {k.name} ({k.id}); gateways refuse it within "
                  f"{settings.api_key_cache_s:g} s (DEPTHMILL_API_KEY_CACHE_S)")
    return 0


_COMMANDS = {"create": _create, "list": _list, "revoke": _revoke}


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser("keys", help="make, list and revoke API keys")
    sub = parser.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="make a key (prints it once)")
    create.add_argument("--name", required=True, help="what the key is for; unique among live keys")
    create.add_argument("--scope", required=True, type=scopes, metavar="S[,S...]",
                        help="read, write, admin (admin may also write, write may also read)")
    create.add_argument("--expires", type=duration, metavar="LIFETIME",
                        help="e.g. 90d, 12h, 2w; default: never")
    sub.add_parser("list", help="every key, revoked ones too (never the secret)")
    revoke = sub.add_parser("revoke", help="revoke a key by name, id or prefix")
    revoke.add_argument("key", metavar="NAME-OR-ID")
    return parser
