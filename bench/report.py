"""What every benchmark does with its results besides printing a table."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path


def write_json(path: Path | None, results: dict) -> None:
    """Write results with when and where they were measured; no-op without ``--json``."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = {"measured_at": datetime.now(UTC).isoformat(), "host": platform.node(), **results}
    path.write_text(json.dumps(stamped, indent=2))
