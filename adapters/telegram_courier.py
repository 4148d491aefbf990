"""Shows a job's life in Telegram: edits one progress reply, then sends the video.

Where to answer comes from the job row (``reply_to``), so a restarted bot still
replies in the right chat to the right photo. Flood limits are handled twice: this
courier skips progress edits that come too soon, and PTB's AIORateLimiter spaces
and retries (``RetryAfter``) whatever is sent.
"""

from __future__ import annotations

import asyncio
import logging
import time

from telegram import Bot, ReplyParameters
from telegram.error import BadRequest, TelegramError

from bot import catalog
from bot.config import TelegramSettings
from bot.jobs import Job, Progress, Video

log = logging.getLogger(__name__)


class TelegramCourier:
    def __init__(self, bot: Bot, settings: TelegramSettings, clock=time.monotonic):
        self.bot = bot
        self.settings = settings
        self.clock = clock
        self._last_edit: dict[int, tuple[float, str]] = {}  # status message -> (when, stage)
        self._latest: dict[tuple[int, int], str] = {}  # the text each message should end up with
        self._locks: dict[tuple[int, int], asyncio.Lock] = {}

    async def progress(self, job: Job, update: Progress) -> None:
        status = job.reply_to.get("status_message_id")
        if not status:
            return
        now = self.clock()
        when, stage = self._last_edit.get(status, (0.0, ""))
        if stage == update.stage and now - when < self.settings.progress_interval:
            return  # same stage, too soon: skip rather than queue up edits
        self._last_edit[status] = (now, update.stage)
        await self._edit(job, f"Job {job.id} ({job.label}): {update.text()}")

    async def deliver(self, job: Job, video: Video) -> None:
        chat, photo = job.reply_to["chat_id"], job.reply_to.get("photo_message_id")
        reply = ReplyParameters(message_id=photo, allow_sending_without_reply=True) if photo else None
        limit = int(self.settings.upload_limit_mb * 1024 * 1024)
        if video.nsfw and self.settings.nsfw == "block":
            await self.bot.send_message(
                chat, f"Job {job.id}: WaveSpeed flagged the video as NSFW, so it is not posted here.",
                reply_parameters=reply)
        elif video.size > limit:
            await self.bot.send_message(
                chat, f"Job {job.id} is ready, but the video is {video.size / 1048576:.0f} MB, over "
                f"the {self.settings.upload_limit_mb:g} MB a bot may upload. Download it here "
                f"(kept for 7 days): {video.url}", reply_parameters=reply)
        else:
            with video.path.open("rb") as file:
                await self.bot.send_video(
                    chat, file, caption=_caption(job), reply_parameters=reply,
                    has_spoiler=video.nsfw, supports_streaming=True,
                    filename=f"kling-{job.id}.mp4", write_timeout=120, read_timeout=120)
        await self._edit(job, f"Job {job.id} ({job.label}): done.")
        self._forget(job)

    async def fail(self, job: Job, reason: str) -> None:
        if not await self._edit(job, f"Job {job.id}: {reason}"):
            await self.bot.send_message(job.reply_to["chat_id"], f"Job {job.id}: {reason}")
        self._forget(job)

    def _forget(self, job: Job) -> None:
        """Drop a finished job's throttle state, so a long-running bot does not grow."""
        status = job.reply_to.get("status_message_id")
        key = (job.reply_to.get("chat_id"), status)
        self._last_edit.pop(status, None)
        self._latest.pop(key, None)
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]

    async def _edit(self, job: Job, text: str) -> bool:
        status = job.reply_to.get("status_message_id")
        if not status:
            return False
        return await self.edit(job.reply_to["chat_id"], status, text)

    async def edit(self, chat_id: int, message_id: int, text: str) -> bool:
        """Edit a status message; edits of one message never overtake each other.

        A RetryAfter makes PTB's rate limiter wait and resend; meanwhile newer texts
        queue here, and only the newest is sent, so a stale "queued" can never land
        on top of "done".
        """
        key = (chat_id, message_id)
        self._latest[key] = text
        async with self._locks.setdefault(key, asyncio.Lock()):
            if self._latest.get(key) != text:
                return True  # superseded while waiting: the newer text goes instead
            try:
                await self.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id)
            except BadRequest as err:
                if "not modified" in str(err).lower():
                    return True
                log.info("cannot edit status message %s (%s)", message_id, err)
                return False
            except TelegramError as err:
                log.warning("status edit of %s failed (%s)", message_id, err)
                return False
            return True


def _caption(job: Job) -> str:
    model = catalog.model_by_id(job.model_id)
    return f"{job.label} · {model.title}"[:1024]
