"""The job engine: accept -> queue -> submit -> poll -> download -> deliver -> settle.

Every state change is one SQLite write, so a restarted engine picks each job up where
it was: a job with a prediction id is polled again (never submitted twice), a queued
one is submitted, a downloaded video is delivered again. Credits are reserved with
the job row in one transaction and settled with its final state in another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path

from bot import catalog
from bot.catalog import ValidationError
from bot.config import Settings
from bot.jobs import (Accepted, Courier, GenerationRequest, Job, JobState, Progress,
                      Rejected, UserRef, Video)
from bot.media import Media, prepare_audio, prepare_image
from bot.quota import Balance, OutOfCredits, Quota, cost_of
from bot.store import Store
from bot.wavespeed import (AuthError, BadRequest, Moderated, NotSubmitted, RateLimited,
                           SubmitUncertain, Transient, WaveSpeedClient, WaveSpeedError,
                           backoff, data_uri)

log = logging.getLogger(__name__)

MIN_POLL_GAP = 1.0  # seconds: the closest two result checks get, near the expected end
DOWNLOAD_ATTEMPTS = 4
DELIVERY_ATTEMPTS = 3
DELIVERY_TIMEOUT = 600.0  # an upload that hangs longer than this counts as failed
COURIER_TIMEOUT = 30.0  # a progress or failure message that hangs is skipped
ACCOUNT_PROBLEM = "The bot's WaveSpeed account refused the job; the operator has been told."


class JobFailed(Exception):
    """Ends a job as failed; str() is the user-facing reason."""


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


class Engine:
    """Runs jobs for every adapter; adapters register a courier per platform."""

    def __init__(self, settings: Settings, store: Store, client: WaveSpeedClient,
                 *, clock=time.time):
        self.settings = settings
        self.store = store
        self.client = client
        self.clock = clock
        self.quota = Quota(store, settings.quota, clock)
        self.videos_dir = Path(settings.storage.videos_dir)
        self.couriers: dict[str, Courier] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._at_wavespeed: set[int] = set()
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._first_job_id = 0  # with resume=False: ignore jobs older than this run
        self._stopping = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "Engine":
        """An engine with its own store and WaveSpeed client, as configured."""
        ws = settings.wavespeed
        client = WaveSpeedClient(ws.base_url, ws.api_key, request_timeout=ws.request_timeout,
                                 retry_cap=min(10.0, ws.poll_interval))
        return cls(settings, Store(settings.storage.path), client)

    def register(self, platform: str, courier: Courier) -> None:
        self.couriers[platform] = courier

    # --- lifecycle ----------------------------------------------------------

    async def start(self, *, resume: bool = True) -> None:
        """Start scheduling; with resume, pick up unfinished jobs of registered platforms."""
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            for job in self.store.active_jobs():
                if job.platform in self.couriers:
                    self._resume(job)
        else:
            last = self.store.db.execute("select max(id) from jobs").fetchone()[0]
            self._first_job_id = (last or 0) + 1
        self._stopping = False
        self._scheduler = asyncio.create_task(self._schedule_loop(), name="kling-scheduler")

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

    async def stop(self) -> None:
        """Stop all work; unfinished jobs stay in the database for the next start."""
        self._stopping = True
        tasks = [t for t in [self._scheduler, *self._tasks.values()] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._scheduler = None

    async def close(self) -> None:
        await self.stop()
        await self.client.close()
        self.store.close()

    # --- requests from chats --------------------------------------------------

    async def accept(self, request: GenerationRequest) -> Accepted | Rejected:
        """Validate, check media, reserve credits and queue the job; or say why not."""
        user = request.user
        try:
            model = catalog.resolve_model(request.model, request.kind)
            params = replace(request.params, has_end_image=request.end_image is not None,
                             has_audio=request.audio is not None)
            inputs = catalog.check_params(model, params)
            media = await asyncio.to_thread(self._prepare_media, model, request)
        except ValidationError as err:
            return Rejected(str(err))
        seconds = media["audio"].seconds if "audio" in media else int(inputs.get("duration", 5))
        cost = cost_of(model, seconds, self.settings.costs)
        now = self.clock()
        try:
            with self.store.transaction():
                if busy := self._too_many_jobs(user):
                    return Rejected(busy)
                daily, bonus, period = self.quota.reserve(user, cost)
                job_id = self.store.insert_job({
                    "user_key": user.key, "platform": user.platform, "reply_to": request.reply_to,
                    "model_id": model.id, "kind": model.kind, "inputs": inputs,
                    "label": _label(model, inputs), "cost": cost, "paid_daily": daily,
                    "paid_bonus": bonus, "period": period, "state": JobState.QUEUED.value,
                    "created_at": now, "updated_at": now,
                })
                self.quota.record(user.key, "reserve", -daily, -bonus, job_id)
                for role, item in media.items():
                    self.store.put_media(job_id, role, item.mime, item.filename, item.data)
        except OutOfCredits as err:
            return Rejected(str(err))
        self._wake.set()
        job = self.store.job(job_id)
        log.info("job %s accepted: %s for %s, %s credits", job_id, model.id, user.key, cost)
        return Accepted(job, self.store.queue_position(job_id), self.quota.balance(user).total)

    def precheck(self, user: UserRef, kind: catalog.Kind, model_name: str | None,
                 params: catalog.Params) -> Rejected | None:
        """Refusals that need no media (bad settings, too many jobs, no credits), so an
        adapter can answer before downloading anything. ``accept`` checks again."""
        try:
            model = catalog.resolve_model(model_name, kind)
            inputs = catalog.check_params(model, params)
        except ValidationError as err:
            return Rejected(str(err))
        if busy := self._too_many_jobs(user):
            return Rejected(busy)
        cost = cost_of(model, int(inputs.get("duration", 5)), self.settings.costs)
        have = self.quota.balance(user).total
        return Rejected(self.quota.shortfall(cost, have)) if have < cost else None

    def _too_many_jobs(self, user: UserRef) -> str | None:
        limit = self.settings.quota.max_jobs_per_user
        if self.store.count_active(user.key) < limit:
            return None
        return (f"You already have {limit} job{'s' * (limit != 1)} queued or running. "
                "Wait for one to finish (/jobs shows them).")

    def _prepare_media(self, model: catalog.Model, request: GenerationRequest) -> dict[str, Media]:
        max_bytes = int(self.settings.media.max_download_mb * 1024 * 1024)
        media = {"image": prepare_image(request.image or b"", model.image, max_input_bytes=max_bytes)}
        if request.end_image is not None:
            media["end_image"] = prepare_image(request.end_image, catalog.ImageRule(),
                                               max_input_bytes=max_bytes, label="end image")
        if request.audio is not None:
            media["audio"] = prepare_audio(request.audio, max_input_bytes=max_bytes,
                                           max_seconds=self.settings.media.max_audio_seconds)
        return media

    async def cancel(self, user: UserRef, job_id: int) -> str:
        """Cancel a queued job of the user's and refund it; the answer is user-facing."""
        with self.store.transaction():
            job = self.store.job(job_id)
            if job is None or job.user_key != user.key:
                return f"You have no job {job_id}."
            if job.state.finished:
                return f"Job {job_id} has already ended ({job.state.value})."
            if job.state != JobState.QUEUED or job_id in self._tasks:
                return (f"Job {job_id} is already being generated and can no longer be "
                        "cancelled; it will be delivered when ready.")
            job = self.store.update_job(job_id, state=JobState.CANCELLED, finished_at=self.clock(),
                                        error="cancelled by its owner")
            self.quota.refund(job, "cancelled by its owner")
            self.store.drop_media(job_id)
        text = f"Job {job_id} cancelled; {_credits(job.cost)} refunded."
        await self._tell(job, "fail", text)
        await self._announce_positions()
        return text

    def balance(self, user: UserRef) -> Balance:
        return self.quota.balance(user)

    def jobs_of(self, user: UserRef) -> list[tuple[Job, int]]:
        """The user's unfinished jobs with their queue positions (0 = running)."""
        return [(job, self.store.queue_position(job.id)) for job in self.store.user_jobs(user.key)]

    # --- scheduling -----------------------------------------------------------

    async def _schedule_loop(self) -> None:
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

    def _queued_where(self) -> tuple[str, list[object]]:
        platforms = list(self.couriers) or [""]
        where = (f"state = 'queued' and id >= ? and platform in ({', '.join('?' * len(platforms))})")
        return where, [self._first_job_id, *platforms]

    def _next_retry_in(self) -> float | None:
        where, args = self._queued_where()
        row = self.store.db.execute(f"select min(not_before) from jobs where {where}", args).fetchone()
        if row[0] is None:
            return None
        return max(0.05, row[0] - self.clock())

    async def _fill_slots(self) -> None:
        started = False
        while len(self._at_wavespeed) < self.settings.wavespeed.max_concurrent:
            where, args = self._queued_where()
            jobs = self.store.jobs_where(f"{where} and not_before <= ?", [*args, self.clock()],
                                         limit=len(self._tasks) + 1)
            job = next((j for j in jobs if j.id not in self._tasks), None)
            if job is None:
                break
            self._at_wavespeed.add(job.id)
            self._spawn(self.store.update_job(job.id, state=JobState.SUBMITTING,
                                              updated_at=self.clock()))
            started = True
        if started:
            await self._announce_positions()

    async def _announce_positions(self) -> None:
        where, args = self._queued_where()
        for position, job in enumerate(self.store.jobs_where(where, args), start=1):
            await self._tell(job, "progress", Progress("queued", position=position))

    def _spawn(self, job: Job) -> None:
        self._tasks[job.id] = asyncio.create_task(self._drive(job), name=f"kling-job-{job.id}")

    # --- one job ----------------------------------------------------------------

    async def _drive(self, job: Job) -> None:
        try:
            if job.state == JobState.SUBMITTING:
                job = await self._submit(job)
            if job.state == JobState.PROCESSING:
                job = await self._follow(job)
            self._leave_wavespeed(job.id)
            if job.state == JobState.DOWNLOADING:
                job = await self._download(job)
            if job.state == JobState.DELIVERING:
                await self._deliver(job)
        except JobFailed as failure:
            await self._fail(job.id, str(failure))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s crashed", job.id)
            await self._fail(job.id, "Something went wrong on the bot's side.")
        finally:
            self._tasks.pop(job.id, None)
            self._leave_wavespeed(job.id)

    def _leave_wavespeed(self, job_id: int) -> None:
        if job_id in self._at_wavespeed:
            self._at_wavespeed.discard(job_id)
            self._wake.set()

    def _update(self, job: Job, **changes: object) -> Job:
        return self.store.update_job(job.id, updated_at=self.clock(), **changes)

    async def _submit(self, job: Job) -> Job:
        await self._tell(job, "progress", Progress("submitting"))
        try:
            inputs = {**job.inputs, **await self._media_refs(job)}
            prediction = await self.client.submit(job.model_id, inputs)
        except (NotSubmitted, Transient) as err:
            return self._retry_submit_later(job, err)
        except SubmitUncertain as err:
            log.error("job %s: submit unconfirmed (%s); WaveSpeed may have a task for it", job.id, err)
            raise JobFailed("WaveSpeed did not confirm the job. Please try again in a minute.") from None
        except AuthError as err:
            log.error("job %s: %s. Check [wavespeed] api_key / WAVESPEED_API_KEY.", job.id, err)
            raise JobFailed(ACCOUNT_PROBLEM) from None
        except Moderated:
            raise JobFailed("Kling's content filter refused this photo or prompt.") from None
        except BadRequest as err:
            raise JobFailed(f"WaveSpeed refused the request: {err}") from None
        log.info("job %s submitted as %s", job.id, prediction.id)
        return self._update(job, state=JobState.PROCESSING, prediction_id=prediction.id,
                            result_url=prediction.result_url, submitted_at=self.clock())

    async def _media_refs(self, job: Job) -> dict[str, str]:
        refs = {}
        for role, item in self.store.media(job.id).items():
            if self.settings.wavespeed.media == "upload":
                refs[role] = await self.client.upload(item["data"], item["filename"], item["mime"])
            else:
                refs[role] = data_uri(item["data"], item["mime"])
        return refs

    def _retry_submit_later(self, job: Job, err: WaveSpeedError) -> Job:
        attempts = self.store.job_row(job.id)["submit_attempts"] + 1
        if self.clock() - job.created_at > self.settings.wavespeed.job_timeout:
            raise JobFailed("WaveSpeed is busy or unreachable right now. Please try again later.")
        delay = backoff(attempts, base=2.0, cap=60.0)
        if isinstance(err, RateLimited) and err.retry_after:
            delay = max(delay, err.retry_after)
        log.warning("job %s not submitted (%s); retrying in %.0fs", job.id, err, delay)
        return self._update(job, state=JobState.QUEUED, submit_attempts=attempts,
                            not_before=self.clock() + delay)

    def _expected_seconds(self, job: Job) -> float:
        history = self.store.recent_run_seconds(job.model_id, job.inputs.get("duration"))
        if len(history) >= 3:
            return statistics.median(history)
        model = catalog.model_by_id(job.model_id)
        return model.expected_seconds * (2 if job.inputs.get("duration") == "10" else 1)

    async def _follow(self, job: Job) -> Job:
        ws = self.settings.wavespeed
        expected = self._expected_seconds(job)
        started = job.submitted_at or job.created_at
        deadline = started + ws.job_timeout
        while True:
            now = self.clock()
            delay = min(poll_delay(now - started, expected, ws.poll_interval), max(0.0, deadline - now))
            await asyncio.sleep(delay)
            prediction = None
            try:
                prediction = await self.client.result(job.prediction_id, job.result_url)
            except Transient as err:
                log.warning("job %s: result check failed (%s); will check again", job.id, err)
            except AuthError as err:
                log.error("job %s: %s while checking results", job.id, err)
                raise JobFailed(ACCOUNT_PROBLEM) from None
            except WaveSpeedError as err:
                raise JobFailed(f"WaveSpeed lost track of the job ({err}).") from None
            if prediction and prediction.status == "completed":
                if not prediction.outputs:
                    raise JobFailed("Kling finished without a video.")
                return self._update(job, state=JobState.DOWNLOADING, output_url=prediction.outputs[0],
                                    nsfw=int(any(prediction.nsfw)),
                                    inference_ms=prediction.inference_ms)
            if prediction and prediction.status in ("failed", "cancelled", "timeout"):
                detail = prediction.error or prediction.status
                raise JobFailed(f"Kling could not make this video: {detail}.")
            if self.clock() >= deadline:
                raise JobFailed(f"The video took longer than {_duration(ws.job_timeout)} and was stopped.")
            await self._tell(job, "progress",
                             Progress("generating", elapsed=self.clock() - started, expected=expected))

    async def _download(self, job: Job) -> Job:
        await self._tell(job, "progress", Progress("downloading"))
        dest = self.videos_dir / f"job-{job.id}.mp4"
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                await self.client.download(job.output_url, dest)
                break
            except Transient as err:
                if attempt == DOWNLOAD_ATTEMPTS - 1:
                    raise JobFailed("The finished video could not be fetched from WaveSpeed.") from None
                log.warning("job %s: download failed (%s); retrying", job.id, err)
                await asyncio.sleep(backoff(attempt, base=1.0))
            except WaveSpeedError as err:
                raise JobFailed(f"The finished video could not be fetched ({err}).") from None
        return self._update(job, state=JobState.DELIVERING, video_path=str(dest))

    async def _deliver(self, job: Job) -> None:
        path = Path(job.video_path or "")
        if not path.is_file():  # e.g. a restart on another disk: fetch it again
            job = await self._download(self._update(job, state=JobState.DOWNLOADING))
            path = Path(job.video_path)
        courier = self.couriers[job.platform]
        video = Video(path=path, size=path.stat().st_size, nsfw=job.nsfw, url=job.output_url)
        await self._tell(job, "progress", Progress("uploading"))
        for attempt in range(DELIVERY_ATTEMPTS):
            try:
                async with asyncio.timeout(DELIVERY_TIMEOUT):
                    await courier.deliver(job, video)
                break
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("job %s: delivery failed (%s: %s)", job.id, type(err).__name__, err)
                if attempt == DELIVERY_ATTEMPTS - 1:
                    raise JobFailed("The video was made but could not be posted here.") from None
                await asyncio.sleep(backoff(attempt, base=2.0))
        with self.store.transaction():
            job = self._update(job, state=JobState.DONE, finished_at=self.clock())
            self.quota.commit(job)
            self.store.drop_media(job.id)
        path.unlink(missing_ok=True)
        log.info("job %s delivered", job.id)

    async def _fail(self, job_id: int, reason: str) -> None:
        with self.store.transaction():
            job = self.store.job(job_id)
            if job is None or job.state.finished:
                return
            job = self._update(job, state=JobState.FAILED, error=reason, finished_at=self.clock())
            refunded = self.quota.refund(job, reason)
            self.store.drop_media(job_id)
        if job.video_path:
            Path(job.video_path).unlink(missing_ok=True)
        log.info("job %s failed: %s", job_id, reason)
        text = f"{reason} Your {_credits(job.cost)} {'were' if job.cost != 1 else 'was'} refunded." \
            if refunded and job.cost else reason
        await self._tell(job, "fail", text)

    async def _tell(self, job: Job, what: str, payload: object) -> None:
        """Call the job's courier; a chat that misbehaves must not break the job."""
        courier = self.couriers.get(job.platform)
        if courier is None:
            return
        try:
            async with asyncio.timeout(COURIER_TIMEOUT):
                await getattr(courier, what)(job, payload)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("job %s: courier %s failed (%s: %s)", job.id, what, type(err).__name__, err)


def _label(model: catalog.Model, inputs: dict[str, object]) -> str:
    if "effect_scene" in inputs:
        return f"effect {inputs['effect_scene']}"
    prompt = str(inputs.get("prompt") or "")
    short = prompt if len(prompt) <= 60 else prompt[:57] + "…"
    return f"{model.key}: {short}" if short else model.title


def _credits(n: int) -> str:
    return f"{n} credit{'s' * (n != 1)}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
