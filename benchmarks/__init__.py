"""Benchmarks: measured, reported and committed (benchmarks/results/), never timed tests."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any


def when_and_where() -> dict[str, Any]:
    """The ``date`` and ``machine`` every result file starts with: numbers depend on both."""
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                        "python": platform.python_version()}}
