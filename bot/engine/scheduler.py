"""The durable wake loop: queued rows in SQLite, a few slots at WaveSpeed, one task per job.

Like a timer table (RoboDanny's reminders), the queue lives in the database and
one loop wakes when something changes or the earliest retry falls due, so nothing
is lost by a restart. ``[wavespeed] max_concurrent`` jobs are at WaveSpeed at once;
the others wait, and their chats are told their place in line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bot.engine.couriers import Couriers
from bot.engine.pipeline import Pipeline
from bot.jobs import Job, JobState, Progress
from bot.store import Store

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, store: Store, pipeline: Pipeline, couriers: Couriers,
                 max_concurrent: int, clock: Callable[[], float]):
        self.store = store
        self.pipeline = pipeline
        self.couriers = couriers
        self.max_concurrent = max_concurrent
        self.clock = clock
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._at_wavespeed: set[int] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._first_job_id = 0  # with resume=False: ignore jobs older than this run
        self._stopping = False

    async def start(self, *, resume: bool = True) -> None:
        """Start the loop; with resume, pick up unfinished jobs of registered platforms."""
        if resume:
            for job in self.store.active_jobs():
                if self.couriers.serves(job.platform):
                    self._resume(job)
        else:
            self._first_job_id = self.store.max_job_id() + 1
        self._stopping = False
        self._loop_task = asyncio.create_task(self._run(), name="kling-scheduler")

    async def stop(self) -> None:
        """Cancel every job task; unfinished jobs stay in the database for the next start."""
        self._stopping = True
        tasks = [t for t in [self._loop_task, *self._tasks.values()] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None

    def wake(self) -> None:
        """Something changed (a job was queued or left WaveSpeed): look again now."""
        self._wake.set()

    def is_driving(self, job_id: int) -> bool:
        return job_id in self._tasks

    def _resume(self, job: Job) -> None:
        if job.state == JobState.SUBMITTING:
            # Stopped mid-submit with no task id: WaveSpeed may or may not have the task.
            # Submitting again is the only way the user gets a video.
            log.warning("job %s was interrupted while submitting; submitting it again", job.id)
            self.store.update_job(job.id, state=JobState.QUEUED)
        elif job.state != JobState.QUEUED:
            log.info("resuming job %s in state %s", job.id, job.state.value)
            if job.state == JobState.PROCESSING:
                self._at_wavespeed.add(job.id)
            self._spawn(job)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._fill_slots()
            except Exception:  # a bug here must not stop every future job
                log.exception("scheduler error")
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
            # that arrives as the event is set, and stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_retry_in()):
                    await self._wake.wait()
            self._wake.clear()

    def _platforms(self) -> list[str]:
        return self.couriers.platforms or [""]

    def _next_retry_in(self) -> float | None:
        due = self.store.next_due(self._platforms(), self._first_job_id)
        return None if due is None else max(0.05, due - self.clock())

    async def _fill_slots(self) -> None:
        started = False
        while len(self._at_wavespeed) < self.max_concurrent:
            due = self.store.queued_jobs(self._platforms(), self._first_job_id, due_by=self.clock(),
                                         limit=len(self._tasks) + 1)
            job = next((j for j in due if j.id not in self._tasks), None)
            if job is None:
                break
            self._at_wavespeed.add(job.id)
            self._spawn(self.store.update_job(job.id, state=JobState.SUBMITTING,
                                              updated_at=self.clock()))
            started = True
        if started:
            await self.announce_positions()

    async def announce_positions(self) -> None:
        """Tell every queued job's chat its place in line."""
        queued = self.store.queued_jobs(self._platforms(), self._first_job_id)
        for position, job in enumerate(queued, start=1):
            await self.couriers.progress(job, Progress("queued", position=position))

    def _spawn(self, job: Job) -> None:
        self._tasks[job.id] = asyncio.create_task(self._drive(job), name=f"kling-job-{job.id}")

    async def _drive(self, job: Job) -> None:
        try:
            await self.pipeline.drive(job, self._release)
        finally:
            self._tasks.pop(job.id, None)
            self._release(job.id)

    def _release(self, job_id: int) -> None:
        if job_id in self._at_wavespeed:
            self._at_wavespeed.discard(job_id)
            self._wake.set()
