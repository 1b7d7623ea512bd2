"""Secrets in URLs stay out of access logs: ``token=`` (an event stream's) is written as
``token=[redacted]``.

uvicorn's access log writes each request's path with its query string (the gateway's own
servers run with it off; a hand-run uvicorn may not), and httpx logs each URL it asks for (a
client in the same process: the tests, a script). Ray Serve's access lines name the route,
never the query.
"""

from __future__ import annotations

import logging
import re

_SECRET_PARAM = re.compile(r"(?i)([?&](?:token|signature)=)[^&\s\"']*")
LOGGERS = ("uvicorn.access", "httpx")


def redact(text: str) -> str:
    return _SECRET_PARAM.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_redacted(a) for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def _redacted(arg: object) -> object:
    """Strings, and objects that print as one (httpx logs its ``URL``); numbers kept for %d."""
    if isinstance(arg, (int, float)) or arg is None:
        return arg
    text = str(arg)
    clean = redact(text)
    return clean if clean != text else arg


def install() -> None:
    """Idempotent: each app built in a process installs it once."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
