"""One job's way through WaveSpeed: submit -> follow -> download -> deliver -> settle.

Each step is a method that takes the job as the database has it and returns it as
it left it; every state change is one write, so a restarted engine picks a job up
at the step it was in: a job with a prediction id is followed (never submitted
twice), a downloaded video is delivered again. Credits are committed with the
``done`` write and refunded with the ``failed`` one, each in one transaction. A video
the chat refuses for good (``DeliveryRefused``) is paid for all the same: it is charged,
kept for /history and offered to its owner privately (``keep_refused``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

from bot import messages
from bot.catalog import BUILT_IN, Catalog
from bot.config import Settings
from bot.credits import Credits
from bot.engine.couriers import Couriers
from bot.engine.follow import Follower
from bot.engine.results import kept_video, refused_video_days
from bot.engine.submit import JobFailed, Submitter
from bot.jobs import DeliveryRefused, Job, JobState, Progress, Video
from bot.store import LeaseLost, Store, StoreOffline
from bot.wavespeed import (
    DownloadRefused,
    Transient,
    WaveSpeedClient,
    WaveSpeedError,
    backoff,
    url_host,
)

log = logging.getLogger(__name__)

DOWNLOAD_ATTEMPTS = 4  # tries of one output URL against transient errors
OUTPUT_REFETCHES = 4  # times a failing output URL is asked for afresh before the job fails
DELIVERY_ATTEMPTS = 3
DELIVERY_TIMEOUT = 600.0  # an upload that hangs longer than this counts as failed


class Pipeline:
    """Drives jobs through their steps; ``released`` is told when a job leaves WaveSpeed."""

    def __init__(self, settings: Settings, store: Store, client: WaveSpeedClient,
                 credits: Credits, couriers: Couriers, clock: Callable[[], float], owner: str,
                 catalog_now: Callable[[], Catalog] = lambda: BUILT_IN,
                 newest_catalog: Callable[[], Awaitable[Catalog]] | None = None):
        self.settings = settings
        self.store = store
        self.client = client
        self.credits = credits
        self.couriers = couriers
        self.clock = clock
        self.owner = owner  # this process: every write to a job is fenced by its claim
        self.videos_dir = Path(settings.storage.videos_dir)
        self.submitter = Submitter(settings, store, client, couriers, clock, owner, catalog_now, newest_catalog)
        self.follower = Follower(settings.wavespeed, store, client, couriers, clock, catalog_now)

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
            await self.fail(job.id, str(failure), failure.kind, billed=failure.billed)
        except LeaseLost:
            log.warning("job %s: another process took it over; leaving it to that one", job.id)
        except (asyncio.CancelledError, StoreOffline):
            raise  # offline: not the job's failure; the scheduler drives it again later
        except Exception:
            log.exception("job %s crashed", job.id)
            await self.fail(job.id, messages.BOT_ERROR)

    async def _update(self, job: Job, **changes: object) -> Job:
        return await self.store.update_job(job.id, owner=self.owner, known=job, updated_at=self.clock(), **changes)

    async def submit(self, job: Job) -> Job:
        return await self.submitter.submit(job)

    # --- follow -------------------------------------------------------------------

    async def follow(self, job: Job) -> Job:
        prediction, completed_at = await self.follower.follow(job)
        return await self._update(job, state=JobState.DOWNLOADING, output_url=prediction.outputs[0],
                            nsfw=int(any(prediction.nsfw)), inference_ms=prediction.inference_ms,
                            completed_at=completed_at)

    # --- download and deliver -----------------------------------------------------

    async def download(self, job: Job) -> Job:
        """Fetch the finished video; an output URL that keeps failing is asked for afresh.
        One on a host the bot may not fetch from fails the job as soon as WaveSpeed's fresh
        answer leads to that host again: asking once more cannot move the video."""
        await self.couriers.progress(job, Progress("downloading"))
        # Named by the process too: after a takeover two processes never share a file.
        dest = self.videos_dir / f"job-{job.id}-{_process_tag(self.owner)}.mp4"
        refused: str | None = None  # the host refused just before a fresh URL was asked for
        for refetch in range(OUTPUT_REFETCHES + 1):
            try:
                await self._fetch_output(job, dest)
                return await self._update(job, state=JobState.DELIVERING, video_path=str(dest))
            except WaveSpeedError as err:
                host = err.host if isinstance(err, DownloadRefused) else None
                if host is not None and (host == refused or refetch == OUTPUT_REFETCHES):
                    raise self._refused_host(job, host) from None
                if refetch == OUTPUT_REFETCHES:
                    log.error("job %s: the video could not be fetched (%s)", job.id, err)
                    raise JobFailed(messages.FETCH_FAILED, "download") from None
                log.warning("job %s: output failed (%s); asking WaveSpeed for it afresh", job.id, err)
                await asyncio.sleep(backoff(refetch, base=1.0))
                fresh = await self.follower.check(job)
                refused = None
                if fresh and fresh.outputs:
                    if host is not None and url_host(fresh.outputs[0]) == host:
                        raise self._refused_host(job, host) from None
                    refused = host
                    job = await self._update(job, output_url=fresh.outputs[0])
        raise AssertionError("unreachable")

    def _refused_host(self, job: Job, host: str) -> JobFailed:
        """The failure of a video WaveSpeed made (and billed) on a host the bot may not fetch
        from: the operator must hear of it (the host only: a URL's query may be signed)."""
        log.error("job %s: WaveSpeed made the video but serves it from %s, which is not in "
                  "[wavespeed] download_hosts (add it there if it is WaveSpeed's); the job is refunded",
                  job.id, host)
        return JobFailed(messages.VIDEO_ON_REFUSED_HOST, "download")

    async def sweep_partial_downloads(self) -> int:
        """Delete the ``.part`` files of downloads no live process is making (a process
        killed mid-download leaves one behind); a live owner's download is left alone."""
        removed = 0
        for path in self.videos_dir.glob("job-*-*.mp4.part"):
            _, number, tag = path.name.removesuffix(".mp4.part").split("-", 2)
            if number.isascii() and number.isdecimal():
                owner = await self.store.claims.live_owner(int(number), self.clock())
                if owner is not None and _process_tag(owner) == tag:
                    continue  # being downloaded right now by the process that holds the job
            path.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("removed %d partial downloads left by stopped processes", removed)
        return removed

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
            job = await self.download(await self._update(job, state=JobState.DOWNLOADING))
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
            except DeliveryRefused as refusal:  # for good: trying again cannot help
                await self.keep_refused(job, video, refusal)
                return
            except Exception as err:
                log.warning("job %s: delivery failed (%s: %s)", job.id, type(err).__name__, err)
                if attempt == DELIVERY_ATTEMPTS - 1:
                    raise JobFailed(messages.NOT_POSTED, "delivery") from None
                await asyncio.sleep(backoff(attempt, base=2.0))
        await self._surely(lambda: self.settle_done(job), job)
        path.unlink(missing_ok=True)
        log.info("job %s delivered", job.id)

    async def keep_refused(self, job: Job, video: Video, refusal: DeliveryRefused) -> None:
        """The chat refused the video for good. WaveSpeed made (and billed) it, so it is
        charged as delivered, kept on disk for ``keep_days`` (/history posts it from there,
        or from WaveSpeed for its 7 days), and the courier offers it privately and says where."""
        log.warning("job %s: the chat refused the video (%s); charged and kept for /history", job.id, refusal)
        keep_days = self.settings.storage.keep_days
        kept = kept_video(self.videos_dir, job.id) if keep_days else video.path
        if keep_days:
            os.replace(video.path, kept)
        await self._surely(lambda: self.settle_done(job, video_path=str(kept) if keep_days else None), job)
        await self.couriers.refused(job, Video(path=kept, size=video.size, nsfw=video.nsfw, url=video.url),
                                    refused_video_days(keep_days))
        if not keep_days:
            kept.unlink(missing_ok=True)

    # --- settle -------------------------------------------------------------------

    async def _surely(self, settle: Callable[[], Awaitable[None]], job: Job) -> None:
        """Write a delivered job's end, however long the database stays unreachable: driven
        again from its last state, its video would be posted twice. (The write may repeat
        one whose answer was lost: the state is the same, and a settlement is made once.)"""
        for attempt in itertools.count():
            try:
                await settle()
                return
            except StoreOffline as err:
                log.warning("job %s: delivered, not yet recorded: the database is unreachable (%s)", job.id, err)
                await asyncio.sleep(backoff(attempt, base=0.5))

    async def settle_done(self, job: Job, **changes: object) -> None:
        """Mark a job whose video the chat has done and commit its credit. A stop that
        comes meanwhile (a cancel) waits for this, then goes on: cut off, the job would
        stay "delivering", reserved, and the next process would post the video again.
        (SQLite's commit never yields to the event loop; PostgreSQL's waits on the network.)"""
        settling = asyncio.ensure_future(self._commit_delivered(job, **changes))
        stopped = False
        while True:
            try:
                await asyncio.shield(settling)
                break
            except asyncio.CancelledError:
                if settling.done():  # the commit itself was cancelled (the loop is closing)
                    raise
                stopped = True
        if stopped:
            raise asyncio.CancelledError

    async def _commit_delivered(self, job: Job, **changes: object) -> None:
        """Job done, credit committed, media dropped (unless kept for the result buttons):
        one write, fenced by this process's claim."""
        now = self.clock()
        await self.credits.commit_delivered(job, self.owner, drop_media=not self.settings.storage.keep_days,
                                            state=JobState.DONE, finished_at=now, updated_at=now,
                                            charged_usd=job.quote_usd, **changes)  # WaveSpeed billed its task

    async def fail(self, job_id: int, reason: str, kind: str = "other", *, billed: bool | None = None) -> None:
        """End a job as failed (``kind``: ``bot.jobs.FAILURE_KINDS``), refund it once, and
        tell its chat why. What WaveSpeed charged is recorded: the quote when it bills the
        task (``billed``; None: when the task completed, or exists and did not fail), else 0."""
        try:
            async with self.store.transaction():
                job = await self.store.job(job_id)
                if job is None or job.state.finished:
                    return
                job = await self._update(job, state=JobState.FAILED, error=reason, finished_at=self.clock(),
                                         failure=kind, charged_usd=charged_usd(job, billed))
                refunded = await self.credits.refund(job, reason)
                await self.store.files.drop(job_id)
        except LeaseLost:
            log.warning("job %s: not failed here, another process took it over", job_id)
            return
        if job.video_path:
            Path(job.video_path).unlink(missing_ok=True)
        log.info("job %s failed: %s", job_id, reason)
        await self.couriers.fail(job, messages.with_refund(reason, job.cost)
                                 if refunded and job.cost else reason)


def charged_usd(job: Job, billed: bool | None = None) -> Decimal | None:
    """What WaveSpeed charges for a job that ends now: its quote when it bills the task
    (``billed``; None: when its task completed, or exists, as far as the job tells), else
    nothing (no task, or a failed one: WaveSpeed bills neither). None: billed, unquoted."""
    if billed is None:
        billed = bool(job.output_url or job.prediction_id)
    return job.quote_usd if billed else Decimal(0)


def _process_tag(owner: str) -> str:
    """The part of a process's name its video files carry (its random token)."""
    return owner.rsplit(":", 1)[-1]
