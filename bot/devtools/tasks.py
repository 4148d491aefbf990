"""The simulated tasks: how each moves through its states, and the prediction it shows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

OUTCOMES = ("ok", "nsfw", "failed", "stuck", "moderated")
ENDED = ("completed", "failed")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
QUEUED_SHARE = 0.15  # the first part of a task's run it spends queued ("created")


@dataclass
class SimTask:
    id: str
    model: str
    inputs: dict[str, Any]
    image: bytes
    outcome: str
    created: float = field(default_factory=time.monotonic)
    video: bytes | None = None
    created_wall: float = field(default_factory=time.time)  # what created_at shows (UTC)
    webhook: str | None = None  # where its end is POSTed (the submit's ``?webhook=``)
    run_offset: float = 0.0  # seconds this task runs longer (or shorter) than the simulator's job_seconds

    @property
    def created_ms(self) -> int:
        return int(self.created_wall * 1000)

    def run_seconds(self, job_seconds: float) -> float:
        """How long this task takes from its submit to its end."""
        return max(0.0, job_seconds + self.run_offset)

    def ends_at(self, job_seconds: float) -> float:
        """The monotonic moment this task ends (a stuck one: never, but this is when it would)."""
        return self.created + self.run_seconds(job_seconds)

    def status(self, job_seconds: float) -> str:
        """created (queued), processing, then completed or failed after its run; stuck never ends."""
        run = self.run_seconds(job_seconds)
        elapsed = time.monotonic() - self.created
        if self.outcome == "stuck" or elapsed < run:
            return "created" if elapsed < run * QUEUED_SHARE else "processing"
        return "failed" if self.outcome == "failed" else "completed"


def prediction(task: SimTask, origin: str, job_seconds: float,
               output_origin: str | None = None) -> dict[str, Any]:
    """The prediction object: a result's ``data``, a history item, a webhook's body.
    ``output_origin`` names the video on another host (a CDN); the API stays at ``origin``."""
    status = task.status(job_seconds)
    done = status == "completed"
    return {
        "id": task.id, "model": task.model, "status": status,
        "outputs": [f"{output_origin or origin}/outputs/{task.id}.mp4"] if done else [],
        "urls": {"get": f"{origin}/api/v3/predictions/{task.id}/result"},
        "has_nsfw_contents": [task.outcome == "nsfw"] if done else [],
        "created_at": iso_ms(task.created_ms),
        "error": "simulated failure: the model could not animate this image"
                 if status == "failed" else "",
        # WaveSpeed's inference time is the model's own: the time queued is not part of it
        "timings": {"inference": int(task.run_seconds(job_seconds) * (1 - QUEUED_SHARE) * 1000)} if done else {},
    }


def iso_ms(ms: int) -> str:
    """UTC ISO 8601 with milliseconds and a trailing Z: 2026-11-22T10:10:14.123Z."""
    stamp = EPOCH + timedelta(milliseconds=ms)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
