"""The rules every chat courier shares; a platform supplies only its primitives.

A chat shows a job as one status message that is edited as the job moves (throttled
per stage, newest text wins), then a result post: the video with a caption (and the
platform's result buttons), re-encoded to fit when it is over the chat's upload limit
(a link only when even that fails), or a notice when the NSFW policy withholds it.
Failures edit the status message, or are posted when it cannot be edited any more; a
cancel only edits it (the /cancel answer is the one message). A video the chat refuses
for good (the platform's ``post`` raises ``DeliveryRefused``) is sent to its owner
privately where the platform can, and the status message says where to get it. A platform courier
subclasses ``ChatCourier`` and implements the primitives at the bottom.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import Any, Protocol

from bot import catalog, messages
from bot.engine import Engine
from bot.jobs import Job, Press, Progress, UserRef, Video
from bot.videofit import fit_video

log = logging.getLogger(__name__)

FIT_MARGIN = 0.98  # aim a little under the upload limit: the request carries more than the file


class ChatSettings(Protocol):
    """What the shared rules read from a platform's settings section."""

    @property
    def progress_interval(self) -> float: ...

    @property
    def nsfw(self) -> str: ...


class ChatCourier:
    """Status edits and result posts by the shared rules (see the module docstring)."""

    def __init__(self, settings: ChatSettings, clock: Callable[[], float] = time.monotonic):
        self.catalog_now: Callable[[], catalog.Catalog] = lambda: catalog.BUILT_IN  # set by ``register``
        self.progress_interval = settings.progress_interval
        self.nsfw_policy = settings.nsfw
        self.clock = clock
        self._last_edit: dict[Hashable, tuple[float, str]] = {}  # status -> (when, stage)
        self._chat_edit: dict[Hashable, float] = {}  # chat -> when any job's progress was last shown
        self._waiting: dict[Hashable, dict[Hashable, float]] = {}  # chat -> status -> its last edit
        self._latest: dict[Hashable, str] = {}  # the text each status message should end up with
        self._locks: dict[Hashable, asyncio.Lock] = {}
        # Re-encoding is CPU-heavy: one video at a time per lane. Paid deliveries have a lane
        # of their own, so free /history re-posts can never hold one up past its timeout.
        self._lanes = {True: asyncio.Semaphore(1), False: asyncio.Semaphore(1)}

    # --- the Courier protocol ------------------------------------------------------

    async def progress(self, job: Job, update: Progress) -> None:
        key = self.status_key(job)
        if key is None or not self.can_edit(job):
            return
        now = self.clock()
        when, stage = self._last_edit.get(key, (0.0, ""))
        if stage == update.stage and (now - when < self.progress_interval or self._chat_turn_taken(job, key, when)):
            return  # same stage, too soon: skip rather than queue up edits
        self._last_edit[key] = (now, update.stage)
        if (chat := self.chat_key(job)) is not None:
            self._chat_edit[chat] = now
            self._waiting.get(chat, {}).pop(key, None)
        await self.edit_status(job, messages.job_status(job.id, job.label, update.text()))

    def _chat_turn_taken(self, job: Job, key: Hashable, when: float) -> bool:
        """In a chat that limits edits, whether this job must wait: the chat's last edit is
        too recent, or another job there has waited longer (so no job starves)."""
        chat, gap = self.chat_key(job), self.chat_gap(job)
        if chat is None or not gap:
            return False
        waiting = self._waiting.setdefault(chat, {})
        busy = self.clock() - self._chat_edit.get(chat, 0.0) < gap
        if busy or any(since < when for other, since in waiting.items() if other != key):
            waiting[key] = when
            return True
        return False

    async def deliver(self, job: Job, video: Video) -> None:
        await self.show(job, video, paid=True)
        await self.edit_status(job, messages.job_done(job.id, job.label))
        self._forget(job)

    async def cancelled(self, job: Job, text: str) -> None:
        self._forget_throttle(job)
        await self.edit_status(job, messages.job_status(job.id, job.label, messages.cancelled_status(job.cost)))
        self._forget(job)

    async def refused(self, job: Job, video: Video, days: int) -> None:
        """The chat refused the video (the job is charged, the video kept for /history):
        sent to the owner privately where the platform can, and the status message says
        where it is; when that cannot be edited, the private message says it alone."""
        self._forget_throttle(job)
        privately = False  # whether the video itself (or its link) reached them privately
        if (private := self.private_reply_to(job)) is not None:
            try:
                privately = await self.show(dataclasses.replace(job, reply_to=private), video, paid=True,
                                            note=messages.refused_privately(days))
            except Exception as err:  # e.g. they never started a private chat with the bot
                log.info("job %s: could not send it privately either (%s: %s)", job.id, type(err).__name__, err)
        text = messages.video_refused(job.id, job.label, days, sent_privately=privately,
                                      history_where=self.history_where(job))
        if not await self.edit_status(job, text) and not privately:
            try:  # a chat that refuses videos may still take text
                await self.post(job, self.addressed(job, text), None)
            except Exception as err:
                log.info("job %s: could not say where its video is (%s: %s)", job.id, type(err).__name__, err)
        self._forget(job)

    async def show(self, job: Job, video: Video, *, paid: bool = False, note: str | None = None) -> bool:
        """Post a job's video where ``job.reply_to`` says (``paid``: its delivery; else a
        past one again, from /history): withheld by the NSFW policy, re-encoded when over
        the upload limit, a link when even that cannot fit it; ``note`` is added below.
        Returns whether the video (or its link) was posted: False when only withheld."""
        caption = self.addressed(job, messages.caption(job.label, self.catalog_now().model_by_id(job.model_id).title))
        if note:
            caption = f"{caption}\n{note}"
        if self.withheld(job, video):
            await self.post(job, self.addressed(job, messages.nsfw_withheld(job.id)), None)
            return False
        limit = self.upload_limit(job)
        if video.size <= limit:
            await self.post(job, caption, video)
            return True
        fitted = await self._fit(video, int(limit * FIT_MARGIN), self._lanes[paid])
        if fitted is None:
            await self.post(job, messages.too_big_to_upload(
                caption, video.size, self.upload_limit_text(job), video.url), None)
            return video.url is not None
        try:
            await self.post(job, caption, fitted)
        finally:
            fitted.path.unlink(missing_ok=True)
        return True

    async def _fit(self, video: Video, limit: int, lane: asyncio.Semaphore) -> Video | None:
        """The video re-encoded under ``limit`` bytes (a new file), or None when it cannot be."""
        dest = video.path.with_name(f"{video.path.stem}-fit-{secrets.token_hex(4)}{video.path.suffix}")
        await lane.acquire()
        # A thread cannot be stopped: when the delivery is cancelled (its timeout), the
        # encode runs on, holding the lane until it ends, and the file it made is removed.
        encoding = asyncio.ensure_future(asyncio.to_thread(fit_video, video.path, limit, dest))
        encoding.add_done_callback(lambda _: lane.release())
        try:
            fits = await asyncio.shield(encoding)
        except asyncio.CancelledError:
            encoding.add_done_callback(lambda _: dest.unlink(missing_ok=True))
            raise
        if not fits:
            log.info("%s cannot be re-encoded under %d bytes; posting a link", video.path.name, limit)
            return None
        return Video(path=Path(dest), size=dest.stat().st_size, nsfw=video.nsfw, url=video.url)

    async def fail(self, job: Job, reason: str) -> None:
        self._forget_throttle(job)
        text = messages.job_failed(job.id, reason)
        if not await self.edit_status(job, text):
            await self.post(job, self.addressed(job, text), None)
        self._forget(job)

    # --- shared rules ----------------------------------------------------------------

    def withheld(self, job: Job, video: Video) -> bool:
        """The NSFW policy: post as a spoiler, withhold, or allow in age-restricted chats only."""
        if not video.nsfw:
            return False
        return self.nsfw_policy == "block" or (
            self.nsfw_policy == "nsfw_channels_only" and not job.reply_to.get("nsfw_channel"))

    async def edit_status(self, job: Job, text: str) -> bool:
        key = self.status_key(job)
        if key is None or not self.can_edit(job):
            return False
        return await self.ordered_edit(key, text, lambda latest: self.edit_message(job, latest))

    async def ordered_edit(self, key: Hashable, text: str,
                           send: Callable[[str], Awaitable[bool]]) -> bool:
        """Edit one message; edits of it never overtake each other, and only the newest
        waiting text is sent, so a retried stale "queued" can never land on "done"."""
        self._latest[key] = text
        async with self._locks.setdefault(key, asyncio.Lock()):
            if self._latest.get(key) != text:
                return True  # superseded while waiting: the newer text goes instead
            return await send(text)

    def _forget_throttle(self, job: Job) -> None:
        key = self.status_key(job)
        if key is not None:
            self._last_edit.pop(key, None)

    def _forget(self, job: Job) -> None:
        """Drop a finished job's throttle state, so a long-running bot does not grow."""
        key = self.status_key(job)
        if key is None:
            return
        self._last_edit.pop(key, None)
        self._latest.pop(key, None)
        if (chat := self.chat_key(job)) is not None:
            waiting = self._waiting.get(chat)
            if waiting is not None:
                waiting.pop(key, None)
                if not waiting:
                    del self._waiting[chat]
            now = self.clock()  # chats quiet for a minute need no memory of their last edit
            self._chat_edit = {c: at for c, at in self._chat_edit.items() if now - at < 60}
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]

    # --- what a platform supplies ------------------------------------------------------

    def status_key(self, job: Job) -> Hashable | None:
        """Which message shows the job's status (None: there is none)."""
        raise NotImplementedError

    def can_edit(self, job: Job) -> bool:
        """Whether the status message can still be edited."""
        return True

    def chat_key(self, job: Job) -> Hashable | None:
        """The chat a job's messages go to, when the platform limits messages per chat."""
        return None

    def chat_gap(self, job: Job) -> float:
        """Seconds between two progress edits of any jobs in one chat (0: no such limit)."""
        return 0.0

    def addressed(self, job: Job, text: str) -> str:
        """A post's text as addressed to the job's owner (e.g. with a mention)."""
        return text

    def private_reply_to(self, job: Job) -> dict[str, Any] | None:
        """A ``reply_to`` for the owner's private chat with the bot, to offer a video its
        chat refused (None: the platform has none, or it is the chat that refused)."""
        return None

    def history_where(self, job: Job) -> str:
        """Where /history can post a refused video, as ``messages.video_refused`` says it."""
        return ""

    def upload_limit(self, job: Job) -> int:
        raise NotImplementedError

    def upload_limit_text(self, job: Job) -> str:
        raise NotImplementedError

    async def edit_message(self, job: Job, text: str) -> bool:
        """Replace the status message's text; False when it cannot be edited."""
        raise NotImplementedError

    async def post(self, job: Job, text: str, video: Video | None) -> None:
        """A new message in the job's chat: text, with the video attached when given
        (as a spoiler when it is flagged NSFW); ``DeliveryRefused`` when the chat refuses
        it for good."""
        raise NotImplementedError


async def jobs_text(engine: Engine, user: UserRef, asker: Press | None = None, *, private: bool = True) -> str:
    """/jobs, as every front end shows it; asked in a shared chat (``asker``, not
    ``private``), a job made elsewhere is named without its label (``Press.may_show``)."""
    return messages.job_list([
        (job.id, job.label if asker is None or asker.may_show(job, private=private) else messages.MADE_ELSEWHERE,
         job.state.value, position) for job, position in await engine.jobs_of(user)])


def register(engine: Engine, platform: str, courier: ChatCourier) -> None:
    """Give ``engine`` a platform's courier, which names models as the engine's catalog does."""
    courier.catalog_now = lambda: engine.catalog
    engine.register(platform, courier)
