"""The rules every chat courier shares; a platform supplies only its primitives.

A chat shows a job as one status message that is edited as the job moves (throttled
per stage, newest text wins), then a result post: the video with a caption, a link
when the video is over the chat's upload limit, or a notice when the NSFW policy
withholds it. Failures edit the status message, or are posted when it cannot be
edited any more. A platform courier subclasses ``ChatCourier`` and implements the
four primitives at the bottom.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Protocol

from bot import catalog, messages
from bot.engine import Engine
from bot.jobs import Job, Progress, UserRef, Video


class ChatSettings(Protocol):
    """What the shared rules read from a platform's settings section."""

    @property
    def progress_interval(self) -> float: ...

    @property
    def nsfw(self) -> str: ...


class ChatCourier:
    """Status edits and result posts by the shared rules (see the module docstring)."""

    def __init__(self, settings: ChatSettings, clock: Callable[[], float] = time.monotonic):
        self.progress_interval = settings.progress_interval
        self.nsfw_policy = settings.nsfw
        self.clock = clock
        self._last_edit: dict[Hashable, tuple[float, str]] = {}  # status -> (when, stage)
        self._latest: dict[Hashable, str] = {}  # the text each status message should end up with
        self._locks: dict[Hashable, asyncio.Lock] = {}

    # --- the Courier protocol ------------------------------------------------------

    async def progress(self, job: Job, update: Progress) -> None:
        key = self.status_key(job)
        if key is None or not self.can_edit(job):
            return
        now = self.clock()
        when, stage = self._last_edit.get(key, (0.0, ""))
        if stage == update.stage and now - when < self.progress_interval:
            return  # same stage, too soon: skip rather than queue up edits
        self._last_edit[key] = (now, update.stage)
        await self.edit_status(job, messages.job_status(job.id, job.label, update.text()))

    async def deliver(self, job: Job, video: Video) -> None:
        caption = self.addressed(job, messages.caption(job.label, catalog.model_by_id(job.model_id).title))
        if self.withheld(job, video):
            await self.post(job, self.addressed(job, messages.nsfw_withheld(job.id)), None)
        elif video.size > self.upload_limit(job):
            await self.post(job, messages.too_big_to_upload(
                caption, video.size, self.upload_limit_text(job), video.url), None)
        else:
            await self.post(job, caption, video)
        await self.edit_status(job, messages.job_done(job.id, job.label))
        self._forget(job)

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

    def addressed(self, job: Job, text: str) -> str:
        """A post's text as addressed to the job's owner (e.g. with a mention)."""
        return text

    def upload_limit(self, job: Job) -> int:
        raise NotImplementedError

    def upload_limit_text(self, job: Job) -> str:
        raise NotImplementedError

    async def edit_message(self, job: Job, text: str) -> bool:
        """Replace the status message's text; False when it cannot be edited."""
        raise NotImplementedError

    async def post(self, job: Job, text: str, video: Video | None) -> None:
        """A new message in the job's chat: text, with the video attached when given
        (as a spoiler when it is flagged NSFW)."""
        raise NotImplementedError


def jobs_text(engine: Engine, user: UserRef) -> str:
    """/jobs, as every front end shows it."""
    return messages.job_list([(job.id, job.label, job.state.value, position)
                              for job, position in engine.jobs_of(user)])
