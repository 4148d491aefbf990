"""One job's way through WaveSpeed: submit -> follow -> download -> deliver -> settle.

Each step is a method that takes the job as the database has it and returns it as
it left it; every state change is one write, so a restarted engine picks a job up
at the step it was in: a job with a prediction id is followed (never submitted
twice), a downloaded video is delivered again. Credits are committed with the
``done`` write and refunded with the ``failed`` one, each in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Callable
from pathlib import Path

from bot import catalog, messages
from bot.config import Settings
from bot.credits import Credits
from bot.engine.couriers import Couriers
from bot.engine.submit import JobFailed, Submitter
from bot.jobs import Job, JobState, Progress, Video
from bot.store import LeaseLost, Store
from bot.wavespeed import (
    AuthError,
    Prediction,
    Transient,
    WaveSpeedClient,
    WaveSpeedError,
    backoff,
)

log = logging.getLogger(__name__)

MIN_POLL_GAP = 1.0  # seconds: the closest two result checks get, near the expected end
DOWNLOAD_ATTEMPTS = 4  # tries of one output URL against transient errors
OUTPUT_REFETCHES = 4  # times a failing output URL is asked for afresh before the job fails
EMPTY_RESULT_RECHECKS = 3  # a "completed" answer without a video is checked again this often
DELIVERY_ATTEMPTS = 3
DELIVERY_TIMEOUT = 600.0  # an upload that hangs longer than this counts as failed
FINISHED_AT_WAVESPEED = ("failed", "cancelled", "timeout")


def poll_delay(elapsed: float, expected: float, max_gap: float) -> float:
    """Seconds until the next result check: sparse early, dense near the expected end.

    Never more than ``max_gap`` (the configured poll_interval), never less than
    MIN_POLL_GAP (or max_gap, if that is smaller).
    """
    min_gap = min(MIN_POLL_GAP, max_gap)
    if elapsed < expected:
        delay = (expected - elapsed) / 2  # halve the distance to the expected end
    else:
        delay = (elapsed - expected) / 4  # late: back off slowly
    return max(min_gap, min(max_gap, delay))


class Pipeline:
    """Drives jobs through their steps; ``released`` is told when a job leaves WaveSpeed."""

    def __init__(self, settings: Settings, store: Store, client: WaveSpeedClient,
                 credits: Credits, couriers: Couriers, clock: Callable[[], float], owner: str):
        self.settings = settings
        self.store = store
        self.client = client
        self.credits = credits
        self.couriers = couriers
        self.clock = clock
        self.owner = owner  # this process: every write to a job is fenced by its claim
        self.videos_dir = Path(settings.storage.videos_dir)
        self.submitter = Submitter(settings, store, client, couriers, clock, owner)

    async def drive(self, job: Job, released: Callable[[int], None]) -> None:
        """Run a job from the step it is in to its end; never raises but for cancellation."""
        try:
            if job.state == JobState.SUBMITTING:
                job = await self.submit(job)
            if job.state == JobState.PROCESSING:
                job = await self.follow(job)
            released(job.id)
            if job.state == JobState.DOWNLOADING:
                job = await self.download(job)
            if job.state == JobState.DELIVERING:
                await self.deliver(job)
        except JobFailed as failure:
            await self.fail(job.id, str(failure))
        except LeaseLost:
            log.warning("job %s: another process took it over; leaving it to that one", job.id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s crashed", job.id)
            await self.fail(job.id, messages.BOT_ERROR)

    def _update(self, job: Job, **changes: object) -> Job:
        return self.store.update_job(job.id, owner=self.owner, updated_at=self.clock(), **changes)

    async def submit(self, job: Job) -> Job:
        return await self.submitter.submit(job)

    # --- follow -------------------------------------------------------------------

    def expected_seconds(self, job: Job) -> float:
        """How long the job should take at WaveSpeed: recent history, else the catalog."""
        history = self.store.recent_run_seconds(job.model_id, job.inputs.get("duration"))
        if len(history) >= 3:
            return statistics.median(history)
        model = catalog.model_by_id(job.model_id)
        return model.expected_seconds * (2 if job.inputs.get("duration") == "10" else 1)

    async def follow(self, job: Job) -> Job:
        ws = self.settings.wavespeed
        expected = self.expected_seconds(job)
        started = job.submitted_at or job.created_at
        deadline = started + ws.job_timeout
        empty_answers = 0
        while True:
            now = self.clock()
            await asyncio.sleep(min(poll_delay(now - started, expected, ws.poll_interval),
                                    max(0.0, deadline - now)))
            prediction = await self._check(job)
            if prediction and prediction.status == "completed":
                if prediction.outputs:
                    return self._update(job, state=JobState.DOWNLOADING, output_url=prediction.outputs[0],
                                        nsfw=int(any(prediction.nsfw)),
                                        inference_ms=prediction.inference_ms)
                # Paid for: a "completed" answer without a video is asked again before giving up.
                empty_answers += 1
                if empty_answers > EMPTY_RESULT_RECHECKS:
                    raise JobFailed(messages.NO_VIDEO)
                log.warning("job %s: completed without a video; checking again", job.id)
                await asyncio.sleep(backoff(empty_answers, base=1.0, cap=ws.poll_interval))
                continue
            if prediction and prediction.status in FINISHED_AT_WAVESPEED:
                raise JobFailed(messages.model_failed(prediction.error or prediction.status))
            if self.clock() >= deadline:
                raise JobFailed(messages.took_too_long(ws.job_timeout))
            await self.couriers.progress(job, Progress(
                "generating", elapsed=self.clock() - started, expected=expected))

    async def _check(self, job: Job) -> Prediction | None:
        """The task's state at WaveSpeed, or None when this check failed transiently."""
        try:
            return await self.client.result(job.prediction_id or "", job.result_url)
        except Transient as err:
            log.warning("job %s: result check failed (%s); will check again", job.id, err)
            return None
        except AuthError as err:
            log.error("job %s: %s while checking results", job.id, err)
            raise JobFailed(messages.ACCOUNT_PROBLEM) from None
        except WaveSpeedError as err:
            raise JobFailed(messages.lost_track(err)) from None

    # --- download and deliver -----------------------------------------------------

    async def download(self, job: Job) -> Job:
        """Fetch the finished video; an output URL that keeps failing is asked for afresh."""
        await self.couriers.progress(job, Progress("downloading"))
        dest = self.videos_dir / f"job-{job.id}.mp4"
        for refetch in range(OUTPUT_REFETCHES + 1):
            try:
                await self._fetch_output(job, dest)
                return self._update(job, state=JobState.DELIVERING, video_path=str(dest))
            except WaveSpeedError as err:
                if refetch == OUTPUT_REFETCHES:
                    log.error("job %s: the video could not be fetched (%s)", job.id, err)
                    raise JobFailed(messages.FETCH_FAILED) from None
                log.warning("job %s: output failed (%s); asking WaveSpeed for it afresh", job.id, err)
                await asyncio.sleep(backoff(refetch, base=1.0))
                fresh = await self._check(job)
                if fresh and fresh.outputs:
                    job = self._update(job, output_url=fresh.outputs[0])
        raise AssertionError("unreachable")

    async def _fetch_output(self, job: Job, dest: Path) -> None:
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                await self.client.download(job.output_url or "", dest)
                return
            except Transient as err:
                if attempt == DOWNLOAD_ATTEMPTS - 1:
                    raise
                log.warning("job %s: download failed (%s); retrying", job.id, err)
                await asyncio.sleep(backoff(attempt, base=1.0))

    async def deliver(self, job: Job) -> None:
        path = Path(job.video_path or "")
        if not path.is_file():  # e.g. a restart on another disk: fetch it again
            job = await self.download(self._update(job, state=JobState.DOWNLOADING))
            path = Path(job.video_path or "")
        video = Video(path=path, size=path.stat().st_size, nsfw=job.nsfw, url=job.output_url)
        await self.couriers.progress(job, Progress("uploading"))
        for attempt in range(DELIVERY_ATTEMPTS):
            try:
                async with asyncio.timeout(DELIVERY_TIMEOUT):
                    await self.couriers.deliver(job, video)
                break
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("job %s: delivery failed (%s: %s)", job.id, type(err).__name__, err)
                if attempt == DELIVERY_ATTEMPTS - 1:
                    raise JobFailed(messages.NOT_POSTED) from None
                await asyncio.sleep(backoff(attempt, base=2.0))
        self.settle_done(job)
        path.unlink(missing_ok=True)
        log.info("job %s delivered", job.id)

    # --- settle -------------------------------------------------------------------

    def settle_done(self, job: Job) -> None:
        with self.store.transaction():
            job = self._update(job, state=JobState.DONE, finished_at=self.clock())
            self.credits.commit(job)
            self.store.drop_media(job.id)

    async def fail(self, job_id: int, reason: str) -> None:
        """End a job as failed, refund it once, and tell its chat why."""
        try:
            with self.store.transaction():
                job = self.store.job(job_id)
                if job is None or job.state.finished:
                    return
                job = self._update(job, state=JobState.FAILED, error=reason, finished_at=self.clock())
                refunded = self.credits.refund(job, reason)
                self.store.drop_media(job_id)
        except LeaseLost:
            log.warning("job %s: not failed here, another process took it over", job_id)
            return
        if job.video_path:
            Path(job.video_path).unlink(missing_ok=True)
        log.info("job %s failed: %s", job_id, reason)
        await self.couriers.fail(job, messages.with_refund(reason, job.cost)
                                 if refunded and job.cost else reason)
