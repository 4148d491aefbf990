"""The engine's one facade: what adapters may ask of the core.

Requests come in (accept, precheck, cancel), questions are answered (balance, jobs,
usage, popular effects), admins move credits, and chat adapters keep the questions
they asked a user (``remember_ask``). Adapters never reach the store or the credit
policy behind it; everything they need is a method here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from bot import catalog, messages
from bot.catalog import ValidationError, clip_seconds
from bot.catalog.schema import image_rule
from bot.config import MediaSettings, Settings
from bot.credits import Credits, OutOfCredits, TooManyJobs, credits_of
from bot.engine.admin import AdminActions
from bot.engine.asks import Asks
from bot.engine.controls import daily_allowance
from bot.engine.couriers import Couriers
from bot.engine.endings import JobEndings
from bot.engine.handover import HandOver
from bot.engine.models import LiveCatalog
from bot.engine.pipeline import Pipeline
from bot.engine.prices import Prices
from bot.engine.questions import Questions
from bot.engine.results import Results
from bot.engine.scheduler import Scheduler
from bot.engine.stats import AdminFigures
from bot.jobs import (
    Accepted,
    Courier,
    GenerationRequest,
    Job,
    JobState,
    Press,
    Rejected,
    UserRef,
)
from bot.media import Media, billable_seconds, prepare_audio, prepare_image
from bot.spend import PromptRules, SpendCapReached, SpendCaps, place_key_of
from bot.store import MediaItem, Staged, Store, StoreOffline, open_store
from bot.wavespeed import WaveSpeedClient
from bot.webhooks import WebhookListener

log = logging.getLogger(__name__)

ACCEPTS_AT_ONCE = 4  # requests checked and written concurrently; more wait their turn
DOUBLE_TAP = 3.0  # seconds in which the same button pressed again by the same user is one press
OUTCOME_CHECKS = (0.2, 0.5, 1.0, 2.0)  # waits before each look for a cut-off accept's job (~4 s in all)


class Engine(Questions, Asks, AdminActions, AdminFigures, HandOver, JobEndings):
    """Runs jobs for every adapter; adapters register a courier per platform."""

    def __init__(self, settings: Settings, store: Store, client: WaveSpeedClient,
                 *, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = store
        self.client = client
        self.clock = clock
        self._closed = False
        self._intake = asyncio.Semaphore(ACCEPTS_AT_ONCE)
        self.webhooks: WebhookListener | None = None
        # Who this process is in the jobs table: its claims (leases) carry this name.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.credits = Credits(store, settings.quota, clock, lambda user: daily_allowance(settings, user))
        self.couriers = Couriers()
        self.rules = PromptRules(settings.moderation)
        self.spend = SpendCaps(settings.spend, settings.quota, store, self.couriers.alert_admins, clock)
        self.live = LiveCatalog(settings, store, client, clock)
        self.prices = Prices(settings, client, lambda: self.live.current, clock)
        self.live.on_change(self.prices.clear)
        self.pipeline = Pipeline(settings, store, client, self.credits, self.couriers, clock, self.owner,
                                 lambda: self.live.current, self.live.newest)
        self.scheduler = Scheduler(store, self.pipeline, self.couriers,
                                   max_concurrent=settings.wavespeed.max_concurrent,
                                   lease_seconds=settings.storage.lease_seconds, clock=clock, paused=self.is_paused)
        self.results = Results(store, client, Path(settings.storage.videos_dir),
                               settings.storage.keep_days, clock, lambda: self.live.current)
        self._housekeeper: asyncio.Task[None] | None = None
        self._catalog_keeper: asyncio.Task[None] | None = None
        self._drives = True
        store.on_change(self._on_store_change)

    @classmethod
    async def from_settings(cls, settings: Settings) -> Engine:
        """An engine with its own store and WaveSpeed client, as configured."""
        ws = settings.wavespeed
        client = WaveSpeedClient(ws.base_url, ws.api_key, request_timeout=ws.request_timeout,
                                 retry_cap=min(10.0, ws.poll_interval), download_hosts=ws.download_hosts)
        # A write waits this long for another process's lock: well inside a lease renewal.
        busy = max(2.0, min(10.0, settings.storage.lease_seconds / 3))
        return cls(settings, await open_store(settings.storage.database, busy_timeout=busy), client)

    def register(self, platform: str, courier: Courier) -> None:
        self.couriers.register(platform, courier)

    # --- lifecycle ----------------------------------------------------------------

    async def start(self, *, resume: bool = True, only_of: UserRef | None = None, drive: bool = True) -> None:
        """Start scheduling (and the webhook listener, when configured); with resume, pick
        up unfinished jobs of registered platforms (only ``only_of``'s, when given: a
        command line finishes its own user's jobs, never another's). ``drive=False`` (a
        front): jobs are accepted for other processes to drive, none is driven here."""
        self._drives = drive
        freeze_startup_objects()
        Path(self.settings.storage.videos_dir).mkdir(parents=True, exist_ok=True)
        await self.pipeline.sweep_partial_downloads()
        async with self.store.transaction():  # holds the write lock: no accept is half done meanwhile
            await self.store.files.sweep()
        await self.live.start()
        await self._warm_before_serving()
        if self._housekeeper is None:
            self._housekeeper = asyncio.create_task(self.results.keep_house(), name="housekeeping")
            self._catalog_keeper = asyncio.create_task(self._keep_catalog(), name="model catalog")
        ws = self.settings.wavespeed
        if ws.webhook_url and ws.webhook_listen and self.webhooks is None:
            secret = ws.webhook_secret or await self.client.webhook_secret()
            self.webhooks = WebhookListener(ws.webhook_listen, secret, self.pipeline.submitter.reconciler.keep_report)
            await self.webhooks.start()
        if drive:
            await self.scheduler.start(resume=resume, user_key=only_of.key if only_of else None)

    async def stop(self, *, withdraw: Sequence[int] = (), wavespeed_gone: bool = False,
                   requeue_lost: bool = False) -> dict[int, Job | None]:
        """Stop all work; unfinished jobs stay in the database for the next start, except
        those in ``withdraw``, settled first (``withdraw``) while still this process's: no
        other process can take one over in between. ``requeue_lost``: a simulated run's jobs
        at its simulator go back to the queue (``bot/engine/handover.py``). The withdrawn jobs."""
        withdrawn: dict[int, Job | None] = {}
        await self.scheduler.stop(before_release=lambda: self._settle_before_release(
            withdraw, wavespeed_gone, requeue_lost, withdrawn))
        await self.couriers.settle()
        await self.spend.settle()
        for task in (self._housekeeper, self._catalog_keeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._housekeeper = self._catalog_keeper = None
        if self.webhooks is not None:
            await self.webhooks.stop()
            self.webhooks = None
        return withdrawn

    def _on_store_change(self, job_id: int) -> None:
        """A job was queued or its task's end recorded, here or in another process (0: it
        cannot be told which): claim, or look at the followed task, at once."""
        self.scheduler.wake()
        self.pipeline.follower.poke(job_id)

    async def close(self) -> None:
        """Stop, then close the database and the HTTP session (a second call does nothing)."""
        if self._closed:
            return
        try:
            await self.stop()
        finally:
            await self.client.close()
            await self.store.close()
            self._closed = True

    # --- requests -------------------------------------------------------------------

    async def accept(self, request: GenerationRequest) -> Accepted | Rejected:
        """Validate, check media, reserve credits and queue the job; or say why not."""
        if refusal := await self.access_refusal(request.user):  # banned, or paused: before any cost
            return refusal
        try:
            model = self.catalog.resolve_model(request.model, request.kind)
            params = replace(request.params, has_end_image=request.end_image is not None,
                             has_audio=request.audio is not None)
            inputs = self.catalog.check_params(model, params)
        except ValidationError as err:
            return Rejected(str(err))
        if refusal := await self.prompt_refusal(params):  # before any cost, and never saying what matched
            return refusal
        # Quoted outside the intake: a slow quote held there would stall the requests behind it.
        usd = await self.prices.quote_usd(model, inputs)
        # A few at a time: a burst of arrivals queues here instead of piling its database
        # work into one turn of the event loop (which would stall every chat).
        place = place_key_of(request.user.platform, request.reply_to)
        if refusal := await self.cap_refusal(place, self.prices.priced(model, clip_seconds(model, inputs), usd)):
            return refusal  # a cheap look first: the authoritative one is in the accept's write
        async with self._intake:
            try:
                media = await asyncio.to_thread(_prepare_media, self.settings.media, model, request)
            except ValidationError as err:
                return Rejected(str(err))
            if "audio" in media and (refusal := await self.precheck(  # priced by its length, said so
                    request.user, request.kind, request.model, params,
                    audio_seconds=billable_seconds(media["audio"].seconds))):
                return refusal
            staged = {role: await self.store.files.stage(item.data, item.filename) for role, item in media.items()}
            try:
                return await self._queue(request, model, inputs, media, staged, usd)
            finally:
                for item in staged.values():
                    await self.store.files.discard(item)  # given to the job by now, unless refused

    async def _queue(self, request: GenerationRequest, model: catalog.Model, inputs: dict[str, object],
               media: dict[str, Media], staged: dict[str, Staged], usd: Decimal | None) -> Accepted | Rejected:
        """Reserve the credits of quote ``usd``, write the job with its media: all or nothing."""
        user, place = request.user, place_key_of(request.user.platform, request.reply_to)
        seconds = billable_seconds(media["audio"].seconds) if "audio" in media else clip_seconds(model, inputs)
        cost = (price := self.prices.priced(model, seconds, usd)).credits
        items = [MediaItem(role, item.mime, item.filename, staged[role]) for role, item in media.items()]
        for attempt in range(2):
            now = self.clock()  # with the user and the reply_to, it tells this accept's row from any other
            row = {
                "platform": user.platform, "reply_to": request.reply_to, "place_key": place,
                "model_id": model.id, "kind": model.kind, "inputs": inputs, "quote_usd": price.usd,
                "label": messages.job_label(model.key, model.title, inputs,
                                            catalog.effect_title(str(inputs.get("effect_scene", "")))),
                "state": JobState.QUEUED.value, "created_at": now, "updated_at": now,
                # Ours to drive when we serve its platform; else any process that does.
                **({"owner": self.owner, "lease_until": self.scheduler.lease_until()}
                   if self._drives and self.couriers.serves(user.platform) else {}),
            }
            try:  # within the [spend] caps, checked in the same write
                reserved, credits_left = await self.spend.within(  # the caps of the day it is made (now)
                    place, self.spend.counted(price), partial(self.credits.reserve_job, user, cost, row, items),
                    at=now)
            except OutOfCredits as err:
                return self.out_of_credits(user.platform, str(err))
            except (TooManyJobs, SpendCapReached) as err:
                return Rejected(str(err))
            except StoreOffline as err:
                # The write's outcome is unknown (a cut COMMIT may have happened): an error now
                # would invite a second, paid, try of a job that may be queued. Find out.
                log.warning("accept for %s cut off (%s): looking for its job", user.key, err)
                known, found = await accept_outcome(self.store, user, now, request.reply_to)
                if not known:
                    return Rejected(messages.ACCEPT_OUTCOME_UNKNOWN)
                if found is None:
                    if attempt == 0:
                        continue  # surely not written, and the database answers again: write it now
                    return Rejected(messages.ACCEPT_OUTCOME_UNKNOWN)
                job, position, credits_left = found
                log.info("job %s accepted (its write's answer was lost): %s for %s", job.id, model.id, user.key)
                self.scheduler.wake()
                return Accepted(job, position, credits_left)
            job = reserved.job
            self.scheduler.wake()
            log.info("job %s accepted: %s for %s, %s credits", job.id, model.id, user.key, cost)
            return Accepted(job, reserved.queue_position, credits_left)
        raise AssertionError("unreachable")  # the second attempt returns

    async def rerun(self, press: Press, source_job_id: int, *, reply_to: dict[str, Any],
                    effect: str | None = None, prompt: str | None = None) -> Accepted | Rejected:
        """A result button: a delivered job's photo again, with its own settings, another
        effect or a prompt; checked and charged like any request, to the presser. A press
        that may not use the job (``Press.may_use``) is refused as if its photo were gone."""
        user = press.user
        # A double tap (or a retried callback, or two processes each handling one) is one order.
        digest = hashlib.sha256((prompt or "").encode()).hexdigest()[:16]
        order = f"rerun:{source_job_id}:{effect or ''}:{digest}"
        async with self.store.transaction():
            first = await self.store.asks.claim(user.platform, user.user_id, order, self.clock(), window=DOUBLE_TAP)
        if not first:
            return Rejected(messages.ALREADY_STARTED)
        request = await self.results.follow_up(press, source_job_id, reply_to, effect=effect, prompt=prompt)
        answer = request if isinstance(request, Rejected) else await self.accept(request)
        if isinstance(answer, Rejected):  # nothing started: pressing again is a new try
            await self.store.asks.unclaim(user.platform, user.user_id, order)
        return answer


_startup_frozen = False


def freeze_startup_objects() -> None:
    """Once per process: keep what exists when the first engine starts (imported modules,
    settings, the catalog: tens of thousands of objects that live as long as the process)
    out of the garbage collector's sight. A full collection, which blocks the event loop,
    then walks only what came since (requests in flight) instead of all of it again."""
    global _startup_frozen
    if not _startup_frozen:
        _startup_frozen = True
        gc.collect()  # what is garbage now is freed, not kept for good
        gc.freeze()


def _prepare_media(settings: MediaSettings, model: catalog.Model, request: GenerationRequest) -> dict[str, Media]:
    """A request's photo, end image and audio, checked and made ready for WaveSpeed."""
    max_bytes = settings.max_download_bytes
    media = {"image": prepare_image(request.image or b"", model.image, max_input_bytes=max_bytes)}
    if request.end_image is not None:  # kept under the model's own name for it ("last_image")
        name = model.field("end_image") or "end_image"
        media[name] = prepare_image(request.end_image, image_rule(model.schema, name),
                                           max_input_bytes=max_bytes, label="end image")
    if request.audio is not None:
        media["audio"] = prepare_audio(request.audio, max_input_bytes=max_bytes,
                                       max_seconds=settings.max_audio_seconds)
    return media


async def accept_outcome(store: Store, user: UserRef, created_at: float, reply_to: dict[str, Any]
                         ) -> tuple[bool, tuple[Job, int, int] | None]:
    """After an accept's write was cut off: whether its outcome could be learnt (the
    database answered within ``OUTCOME_CHECKS``), and then the job it wrote, with its
    place in line and the credits left, or None when it wrote nothing."""
    for delay in OUTCOME_CHECKS:
        await asyncio.sleep(delay)
        try:
            async with store.transaction():
                # The cut write held the user's lock and row until the server ended it,
                # committed or not: once they are ours, its outcome is in the database.
                await store.lock_user(user.key)
                row = await store.user(user.key)
                for job in await store.user_jobs(user.key, active_only=False, limit=ACCEPTS_AT_ONCE + 10):
                    if job.created_at == created_at and job.reply_to == reply_to and row is not None:
                        position = await store.queue_position(job.id)
                        return True, (job, position, credits_of(row))
        except StoreOffline:
            continue
        return True, None
    return False, None
