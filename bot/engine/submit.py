"""The submit step: create a job's WaveSpeed task exactly once, or provably not at all.

A submit answered with a task id is followed. One refused at the door (429, 503, no
connection) created nothing and is queued again, after Retry-After when WaveSpeed
says so. One left unanswered (timeout, reset, 5xx, garbage) may have created a paid
task: its window is recorded before anything else happens, and ``Reconciler`` looks
for the task in WaveSpeed's history, so the job adopts it or is sent once more.
Submits of one model are serialised while such a question is open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot import messages
from bot.catalog import BUILT_IN, Catalog
from bot.config import Settings
from bot.engine.couriers import Couriers
from bot.engine.reconcile import Ambiguous, HistoryUnavailable, Reconciler
from bot.jobs import Job, JobState, Progress
from bot.store import Store, TaskTaken
from bot.wavespeed import (
    AuthError,
    Moderated,
    NotSubmitted,
    Prediction,
    SubmitUncertain,
    Transient,
    WaveSpeedClient,
    WaveSpeedError,
    backoff,
    data_uri,
)
from bot.webhooks import job_url

log = logging.getLogger(__name__)

RESUBMITS = 1  # submits sent again after WaveSpeed provably created no task


class JobFailed(Exception):
    """Ends a job as failed; str() is the user-facing reason, ``kind`` one of
    ``bot.jobs.FAILURE_KINDS``. ``billed``: whether WaveSpeed bills (or may bill) its task;
    None: as the job says (a task completed, or one exists that did not fail)."""

    def __init__(self, reason: str, kind: str = "other", *, billed: bool | None = None):
        super().__init__(reason)
        self.kind = kind
        self.billed = billed


class Submitter:
    def __init__(self, settings: Settings, store: Store, client: WaveSpeedClient,
                 couriers: Couriers, clock: Callable[[], float], owner: str,
                 catalog_now: Callable[[], Catalog] = lambda: BUILT_IN,
                 newest_catalog: Callable[[], Awaitable[Catalog]] | None = None):
        self.settings = settings
        self.catalog_now = catalog_now
        self.newest_catalog = newest_catalog
        self.store = store
        self.client = client
        self.couriers = couriers
        self.clock = clock
        self.owner = owner
        self.reconciler = Reconciler(client, store, settings.wavespeed, clock)
        self._gates: dict[str, asyncio.Lock] = {}  # per model id

    async def _update(self, job: Job, **changes: Any) -> Job:
        return await self.store.update_job(job.id, owner=self.owner, updated_at=self.clock(), **changes)

    async def submit(self, job: Job) -> Job:
        """Create the job's WaveSpeed task exactly once: follow it (PROCESSING), or come
        back later (QUEUED) when WaveSpeed surely created nothing."""
        await self.couriers.progress(job, Progress("submitting"))
        gate = self._gates.setdefault(job.model_id, asyncio.Lock())
        async with gate:
            while True:
                if job.submit_started_at is not None:  # a submit went out unanswered
                    job = await self._reconcile(job)
                    if job.state == JobState.PROCESSING:
                        return job
                job = await self._send(job)
                if job.state != JobState.SUBMITTING:
                    return job

    async def _send(self, job: Job) -> Job:
        """One submit; the job comes back PROCESSING, QUEUED (not created, retry later)
        or SUBMITTING with its submit window recorded (unconfirmed)."""
        if not await self._listed(job.model_id):  # WaveSpeed would refuse it: nothing is created
            log.warning("job %s: model %s is no longer in WaveSpeed's list; refunding", job.id, job.model_id)
            raise JobFailed(messages.MODEL_WITHDRAWN, "withdrawn", billed=False)
        try:
            inputs = {**job.inputs, **await self._media_refs(job)}
        except Transient as err:  # the media upload failed: nothing was submitted
            return await self._retry_submit_later(job, err, None)
        except WaveSpeedError as err:
            raise self._refused(job, err) from None
        job = await self._update(job, submit_started_at=self.clock(), submit_ended_at=None)
        try:
            webhook = job_url(self.settings.wavespeed.webhook_url, job.id) \
                if self.settings.wavespeed.webhook_url else None
            prediction = await self.client.submit(job.model_id, inputs, webhook=webhook)
        except NotSubmitted as err:
            return await self._retry_submit_later(job, err, err.retry_after)
        except (SubmitUncertain, Transient) as err:
            log.warning("job %s: submit unconfirmed (%s); looking for its task", job.id, err)
            return await self._update(job, submit_ended_at=self.clock())
        except WaveSpeedError as err:
            raise self._refused(job, err) from None
        log.info("job %s submitted as %s", job.id, prediction.id)
        return await self._adopt(job, prediction)

    async def _listed(self, model_id: str) -> bool:
        """Whether WaveSpeed lists a model, by this process's listing or a newer one another
        process stored: the front that accepted the job may have read it after this one."""
        if self.catalog_now().listed(model_id):
            return True
        return self.newest_catalog is not None and (await self.newest_catalog()).listed(model_id)

    @staticmethod
    def _refused(job: Job, err: WaveSpeedError) -> JobFailed:
        """WaveSpeed refused the job outright (so it created no task): why, for the user."""
        if isinstance(err, AuthError):
            log.error("job %s: %s. Check [wavespeed] api_key / WAVESPEED_API_KEY.", job.id, err)
            return JobFailed(messages.ACCOUNT_PROBLEM, "wavespeed", billed=False)
        if isinstance(err, Moderated):
            return JobFailed(messages.MODERATED, "moderated", billed=False)
        return JobFailed(messages.api_refused(err), "refused", billed=False)

    async def _adopt(self, job: Job, prediction: Prediction) -> Job:
        try:
            return await self._update(job, state=JobState.PROCESSING, prediction_id=prediction.id,
                                result_url=prediction.result_url, submitted_at=self.clock())
        except TaskTaken:  # never two jobs on one task: the other one shows its video
            log.error("job %s: task %s already belongs to another job; not following it twice",
                      job.id, prediction.id)
            raise JobFailed(messages.SUBMIT_UNCONFIRMED, "wavespeed", billed=False) from None  # the other job's

    async def _reconcile(self, job: Job) -> Job:
        """Settle an unconfirmed submit: adopt its task, or clear it to submit again."""
        try:
            found = await self.reconciler.find(job)
        except Ambiguous:  # a task may exist, and bill: counted as spent
            raise JobFailed(messages.SUBMIT_UNCONFIRMED, "wavespeed", billed=True) from None
        except HistoryUnavailable:
            log.error("job %s: WaveSpeed's history stayed unreadable; refunding though a task "
                      "may exist", job.id)
            raise JobFailed(messages.SUBMIT_UNCONFIRMED, "wavespeed", billed=True) from None
        if found is not None:
            return await self._adopt(job, found)
        if job.resubmits >= RESUBMITS:
            log.error("job %s: no task after %d resubmit(s); refunding", job.id, job.resubmits)
            raise JobFailed(messages.SUBMIT_UNCONFIRMED, "wavespeed", billed=False)  # surely no task
        log.warning("job %s: submitting again (WaveSpeed has no task for it)", job.id)
        return await self._update(job, submit_started_at=None, submit_ended_at=None,
                            resubmits=job.resubmits + 1)

    async def _media_refs(self, job: Job) -> dict[str, str]:
        refs = {}
        for role, item in (await self.store.files.get(job.id)).items():
            if self.settings.wavespeed.media == "upload":
                refs[role] = await self.client.upload(item["data"], item["filename"], item["mime"])
            else:
                refs[role] = data_uri(item["data"], item["mime"])
        return refs

    async def _retry_submit_later(self, job: Job, err: WaveSpeedError, retry_after: float | None) -> Job:
        """WaveSpeed surely has no task: queue the job again, after Retry-After if it said."""
        attempts = job.submit_attempts + 1
        delay = max(backoff(attempts, base=2.0, cap=60.0), retry_after or 0.0)
        if self.clock() + delay > job.created_at + self.settings.wavespeed.job_timeout:
            log.warning("job %s not submitted (%s) and out of time", job.id, err)
            raise JobFailed(messages.WAVESPEED_BUSY, "wavespeed", billed=False)
        log.warning("job %s not submitted (%s); retrying in %.0fs", job.id, err, delay)
        return await self._update(job, state=JobState.QUEUED, submit_attempts=attempts,
                            not_before=self.clock() + delay, submit_started_at=None,
                            submit_ended_at=None)
