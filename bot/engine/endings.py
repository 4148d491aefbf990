"""A job's ends outside the pipeline: its owner cancels it, or its process stops first.

Each writes what WaveSpeed charged (``charged_usd``) and the kind of failure, as the
pipeline's ends do, so the spend and the failure counts hold for every job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

from bot import messages
from bot.credits import Credits
from bot.engine.couriers import Couriers
from bot.engine.pipeline import charged_usd
from bot.engine.scheduler import Scheduler
from bot.jobs import Job, JobState, UserRef
from bot.store import LeaseLost, Store

log = logging.getLogger(__name__)

CANCELLED = "owner cancelled"  # the job's error and the ledger note of its refund


class JobEndings:
    """Cancel and withdraw; ``Engine`` inherits these."""

    store: Store
    credits: Credits
    couriers: Couriers
    scheduler: Scheduler
    clock: Callable[[], float]
    owner: str

    async def cancel(self, user: UserRef, job_id: int) -> str:
        """Cancel a queued job of the user's and refund it; the answer is user-facing."""
        async with self.store.transaction():
            job = await self.store.job(job_id)
            if job is None or job.user_key != user.key:
                return messages.no_such_job(job_id)
            if job.state.finished:
                return messages.job_already_ended(job_id, job.state.value)
            if job.state != JobState.QUEUED or self.scheduler.is_driving(job_id):
                return messages.job_already_running(job_id)
            job = await self.store.update_job(job_id, state=JobState.CANCELLED, finished_at=self.clock(),
                                              error=CANCELLED, failure="cancelled", charged_usd=Decimal(0))
            await self.credits.refund(job, CANCELLED)
            await self.store.files.drop(job_id)
        text = messages.job_cancelled(job_id, job.cost)
        await self.couriers.cancelled(job, text)
        await self.scheduler.announce_positions()
        return text

    async def withdraw(self, job_id: int, *, wavespeed_gone: bool = False) -> Job | None:
        """Settle a job whose process stops first (``generate`` interrupted), from ``stop``
        while still ours: nothing sent to WaveSpeed, it is cancelled and refunded; else it
        stays (its task may exist and bill) for the next process to follow; unless
        ``wavespeed_gone`` (this run's simulator ends with it, and every task in it): then
        a job whose video is not yet downloaded is cancelled and refunded too."""
        async with self.store.transaction():
            job = await self.store.job(job_id)
            if job is None or job.state.finished:
                return job
            untouched = not job.prediction_id and job.submit_started_at is None and \
                job.state in (JobState.QUEUED, JobState.SUBMITTING)
            lost_with_us = wavespeed_gone and job.state != JobState.DELIVERING
            if not (untouched or lost_with_us):
                return job
            try:
                job = await self.store.update_job(job_id, owner=self.owner, state=JobState.CANCELLED,
                                                  finished_at=self.clock(), error=messages.STOPPED_BEFORE_SUBMIT,
                                                  failure="stopped", charged_usd=charged_usd(job))
            except LeaseLost:  # another process has it now: it is that one's to drive
                return job
            await self.credits.refund(job, messages.STOPPED_BEFORE_SUBMIT)
            await self.store.files.drop(job_id)
        log.info("job %s cancelled: its process stopped before submitting it", job_id)
        return job
