"""What an attempt's result means for a delivery: delivered, retried after how long, or failed
for good (Standard Webhooks' advice: retry timeouts, connection errors, 429 and 5xx; honour
Retry-After; give up after the schedule; a 410 means the endpoint is gone)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from db.webhooks import Outcome

# A Retry-After longer than this is read as this: a receiver cannot park a delivery for weeks.
RETRY_AFTER_MAX_S = 24 * 3600.0


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def after_failure(schedule: Sequence[float], attempt: int, *, error: str,
                  response_status: int | None = None, response_body: str | None = None,
                  latency_ms: float | None = None, retry_after: str | None = None) -> Outcome:
    """A retryable failure of attempt ``attempt`` (1-based): retry after the schedule's next
    delay (or Retry-After, if longer, up to a day), or fail for good when the schedule is spent."""
    common = dict(response_status=response_status, response_body=response_body, error=error,
                  latency_ms=latency_ms)
    if attempt >= len(schedule):
        return Outcome("failed", **{**common, "error": f"{error} (gave up after {attempt} attempts)"})
    delay = float(schedule[attempt])
    asked = retry_after_s(retry_after)
    if asked is not None:
        delay = max(delay, min(asked, RETRY_AFTER_MAX_S))
    return Outcome("retry", **common, retry_in_s=delay)


def of_response(schedule: Sequence[float], attempt: int, status: int, body: str,
                headers: dict[str, str], latency_ms: float) -> Outcome:
    if 200 <= status < 300:
        return Outcome("delivered", response_status=status, response_body=body,
                       latency_ms=latency_ms)
    if status == 429 or status >= 500:
        return after_failure(schedule, attempt, error=f"HTTP {status}", response_status=status,
                             response_body=body, latency_ms=latency_ms,
                             retry_after=headers.get("retry-after"))
    common = dict(response_status=status, response_body=body, latency_ms=latency_ms)
    if status == 410:
        return Outcome("failed", **common, error="HTTP 410 Gone",
                       disable="the endpoint answered 410 Gone")
    return Outcome("failed", **common, error=f"HTTP {status}: not retried (only timeouts, connection errors, 429 and 5xx are)")
