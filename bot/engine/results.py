"""A delivered job's afterlife: new jobs from its kept photo, its video posted again.

A delivered job keeps its photo, audio and settings for ``[storage] keep_days`` (its
result buttons make new jobs from them), then they are forgotten. Its video stays at
WaveSpeed for 7 days (WaveSpeed's own window), so ``/history`` can post it again. A video
its chat refused is also kept on disk (``kept-<job>.mp4``) for ``keep_days``, so /history
posts it from there while it is (e.g. after WaveSpeed's 7 days).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot import catalog, messages
from bot.catalog import Params
from bot.jobs import GenerationRequest, Job, JobState, Press, Rejected, UserRef, Video
from bot.store import ASK_LIFETIME, Store
from bot.wavespeed import WaveSpeedClient, WaveSpeedError

log = logging.getLogger(__name__)

OUTPUT_LIFETIME = 7 * 24 * 3600  # WaveSpeed deletes outputs after 7 days
# A video's buttons are pressable from the moment it is posted, before its job is settled.
DELIVERED = (JobState.DELIVERING, JobState.DONE)
HOUSEKEEPING_EVERY = 3600.0  # seconds between two clean-ups of photos past their retention


def kept_video(videos_dir: Path, job_id: int) -> Path:
    """Where a video its chat refused is kept for /history."""
    return videos_dir / f"kept-{job_id}.mp4"


def refused_video_days(keep_days: float) -> int:
    """The days /history can post a refused video: kept here for ``keep_days``, and at
    WaveSpeed for its 7 (whole days, rounded down: never more than is true)."""
    return int(max(keep_days * 24 * 3600, OUTPUT_LIFETIME) // (24 * 3600))


class Results:
    def __init__(self, store: Store, client: WaveSpeedClient, videos_dir: Path,
                 keep_days: float, clock: Callable[[], float],
                 catalog_now: Callable[[], catalog.Catalog] = lambda: catalog.BUILT_IN):
        self.catalog_now = catalog_now
        self.store = store
        self.client = client
        self.videos_dir = videos_dir
        self.keep_seconds = keep_days * 24 * 3600
        self.clock = clock

    async def history(self, user: UserRef, limit: int = 10) -> list[Job]:
        return await self.store.finished_jobs(user.key, limit)

    async def media_kept(self, job: Job) -> bool:
        """Whether the job's buttons can make videos: its photo is kept (keep_days > 0)."""
        return self.keep_seconds > 0 and job.state in DELIVERED and await self.store.files.has(job.id)

    async def follow_up(self, press: Press, source_id: int, reply_to: dict[str, Any], *,
                        effect: str | None, prompt: str | None) -> GenerationRequest | Rejected:
        """The request a result button makes: the source job's photo with its own settings,
        another effect, or a prompt for the default animate model; charged to the presser."""
        user = press.user
        source = await self.store.job(source_id)
        if source is None or source.state not in DELIVERED or not press.may_use(source):
            return Rejected(messages.SOURCE_GONE)
        try:
            media = await self.store.files.get(source_id)  # a prepared photo: small, as the submit reads it
        except OSError:  # forgotten (keep_days) between the look-up and the read
            media = {}
        if "image" not in media:
            return Rejected(messages.SOURCE_GONE)
        image = media["image"]["data"]
        if effect is not None:
            return GenerationRequest(user, "effect", image, Params(effect=effect), reply_to=reply_to)
        if prompt is not None:
            return GenerationRequest(user, "animate", image, Params(prompt=prompt), reply_to=reply_to)
        model = self.catalog_now().model_by_id(source.model_id)
        params = catalog.params_of(model, source.inputs)
        end = next((media[name] for name in catalog.OPTION_FIELDS["end_image"] if name in media), None)
        return GenerationRequest(
            user, source.kind, image, params, model=model.id,
            end_image=end["data"] if end is not None else None,
            audio=media["audio"]["data"] if "audio" in media else None, reply_to=reply_to)

    async def fetch_video(self, user: UserRef, job_id: int) -> Video | Rejected:
        """A past job's video downloaded again into a new file (the caller deletes it)."""
        job = await self.store.job(job_id)
        if job is None or job.user_key != user.key:
            return Rejected(messages.no_such_job(job_id))
        if job.state != JobState.DONE:
            return Rejected(messages.made_no_video(job.id, job.state.value))
        age = self.clock() - (job.finished_at or 0)
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        dest = self.videos_dir / f"again-{job.id}-{secrets.token_hex(4)}.mp4"
        kept = kept_video(self.videos_dir, job.id)
        if age <= self.keep_seconds and kept.is_file():  # its chat refused it: kept here
            try:
                await asyncio.to_thread(shutil.copyfile, kept, dest)
                return Video(path=dest, size=dest.stat().st_size, nsfw=job.nsfw, url=job.output_url)
            except OSError as err:  # e.g. swept a moment ago: WaveSpeed may still have it
                log.info("job %s: its kept video could not be read (%s)", job.id, err)
                dest.unlink(missing_ok=True)
        if not job.prediction_id or age > OUTPUT_LIFETIME:
            return Rejected(messages.VIDEO_GONE)
        url = job.output_url
        try:  # an output URL may be signed for a while only: ask for a fresh one first
            fresh = await self.client.result(job.prediction_id, job.result_url)
            url = fresh.outputs[0] if fresh.outputs else url
        except WaveSpeedError as err:
            log.info("job %s: no fresh output URL (%s); trying the stored one", job.id, err)
        try:
            size = await self.client.download(url or "", dest)
        except WaveSpeedError as err:
            log.info("job %s: its video could not be fetched again (%s)", job.id, err)
            dest.unlink(missing_ok=True)
            return Rejected(messages.VIDEO_GONE)
        return Video(path=dest, size=size, nsfw=job.nsfw, url=url)

    async def keep_house(self) -> None:
        """Forget photos and settings past ``[storage] keep_days``, now and every hour (and
        refused videos kept as long), and remove videos fetched again or re-encoded that a
        crash left behind."""
        while True:
            try:
                await self.expire()
                # Unanswered questions and one-use marks (menus, updates seen) past a day.
                await self.store.asks.forget_before(self.clock() - ASK_LIFETIME)
                self.sweep_copies()
                self.sweep_kept()
            except Exception:  # e.g. a database busy for too long: next hour
                log.exception("housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_EVERY)

    def sweep_copies(self) -> None:
        """Delete re-posted and re-encoded copies older than an hour: their upload is long
        over (a delivery gives up after 10 minutes) unless a crash stopped it."""
        for path in [*self.videos_dir.glob("again-*"), *self.videos_dir.glob("*-fit-*")]:
            with contextlib.suppress(OSError):
                if self.clock() - path.stat().st_mtime > HOUSEKEEPING_EVERY:
                    path.unlink()

    def sweep_kept(self) -> None:
        """Delete refused videos kept longer than ``keep_days``."""
        for path in self.videos_dir.glob("kept-*.mp4"):
            with contextlib.suppress(OSError):
                if self.clock() - path.stat().st_mtime > self.keep_seconds:
                    path.unlink()

    async def expire(self) -> int:
        """Forget the photos and settings kept longer than ``keep_days``."""
        async with self.store.transaction():
            forgotten = await self.store.files.expire(self.clock() - self.keep_seconds)
            for job_id in forgotten:  # the label quoted the prompt: name the model instead
                job = await self.store.job(job_id)
                if job is not None and job.kind != "effect":
                    model = self.catalog_now().model_by_id(job.model_id)
                    await self.store.update_job(job_id, label=messages.job_label(model.key, model.title, job.inputs))
        if forgotten:
            log.info("forgot the photos and prompts of %d jobs older than the retention time", len(forgotten))
        return len(forgotten)
