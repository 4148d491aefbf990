"""``POST /api/v3/predictions``: the history query, checked as the API does, and its page."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.devtools.answers import SimulatedError
from bot.devtools.tasks import EPOCH, SimTask

HISTORY_DAYS = 7


@dataclass(frozen=True)
class HistoryQuery:
    page: int = 1
    page_size: int = 20
    model: str | None = None
    status: str | None = None
    after: int | None = None  # created_after, ms since the epoch
    before: int | None = None  # created_before, ms since the epoch

    @classmethod
    def parse(cls, text: str) -> HistoryQuery:
        """The query in a request body (empty: the defaults); SimulatedError if invalid."""
        try:
            body = json.loads(text) if text.strip() else {}
        except ValueError:
            raise SimulatedError(400, 1401, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise SimulatedError(400, 1401, "the body must be a JSON object")
        page, page_size = body.get("page", 1), body.get("page_size", 20)
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise SimulatedError(400, 1401, "page must be a whole number of at least 1")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 100:
            raise SimulatedError(400, 1401, "page_size must be between 1 and 100")
        model, status = body.get("model"), body.get("status")
        for name, value in (("model", model), ("status", status)):
            if value is not None and not isinstance(value, str):
                raise SimulatedError(400, 1401, f"{name} must be text")
        return cls(page, page_size, model, status, parse_ms(body.get("created_after"), "created_after"),
                   parse_ms(body.get("created_before"), "created_before"))

    def select(self, tasks: Iterable[SimTask], job_seconds: float) -> tuple[list[SimTask], int]:
        """This page of the matching tasks of the last 7 days, newest first, and how many match."""
        oldest = int((time.time() - HISTORY_DAYS * 86400) * 1000)
        chosen = [
            (task.created_wall, n, task) for n, task in enumerate(tasks)
            if task.created_ms >= oldest
            and (self.model is None or task.model == self.model)
            and (self.status is None or task.status(job_seconds) == self.status)
            and (self.after is None or task.created_ms >= self.after)
            and (self.before is None or task.created_ms <= self.before)
        ]
        chosen.sort(key=lambda c: (c[0], c[1]), reverse=True)
        start = (self.page - 1) * self.page_size
        return [task for _, _, task in chosen[start:start + self.page_size]], len(chosen)


def parse_ms(value: Any, name: str) -> int | None:
    """An ISO 8601 timestamp (no zone: UTC) as milliseconds since the epoch."""
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise SimulatedError(400, 1401, f"{name} must be an ISO 8601 timestamp") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return (stamp - EPOCH) // timedelta(milliseconds=1)
