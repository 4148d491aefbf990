"""``[log] format = "json"``: one JSON object per line, for log collectors.

Each line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``job_id`` when
the line is about a job, and ``exception`` with a traceback. Secrets are masked in every
field before it is encoded, so JSON escaping cannot hide one from the mask.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bot.engine import logged_job_id


class JsonLines(logging.Formatter):
    """A record as one line of JSON, its text passed through ``mask``."""

    def __init__(self, mask: Callable[[str], str]):
        super().__init__()
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.entry(record), ensure_ascii=False)

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": self.mask(record.getMessage())}
        job_id = logged_job_id(record)
        if job_id is not None:
            entry["job_id"] = job_id
        if record.exc_info:
            entry["exception"] = self.mask(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = self.mask(self.formatStack(record.stack_info))
        return entry


def one_line(formatter: JsonLines, text: str, level: int = logging.ERROR) -> str:
    """``text`` (a line the command prints itself, e.g. why it cannot start) as a JSON line."""
    return formatter.format(logging.LogRecord("kling-bot", level, __file__, 0, text, None, None))
