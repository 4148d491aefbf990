"""Shows a job's life in Telegram: edits one progress reply, then sends the video
with its result buttons (``menus.Menus.results``).

Where to answer comes from the job row (``reply_to``), so a restarted bot still
replies in the right chat to the right photo. Flood limits are handled twice: the
shared courier skips progress edits that come too soon, and PTB's AIORateLimiter
spaces and retries (``RetryAfter``) whatever is sent. A chat that refuses the video for
good (the user blocked the bot, the group took away the right to post videos) raises
``DeliveryRefused``; the video is then sent to the owner's private chat with the bot,
which works when they have started it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Hashable
from typing import Any

from telegram import Bot, ReplyParameters
from telegram.error import BadRequest, Forbidden, TelegramError

from adapters.chat import ChatCourier
from adapters.telegram.menus import Menus
from bot import messages
from bot.config import TelegramSettings
from bot.jobs import DeliveryRefused, Job, Video

log = logging.getLogger(__name__)

CAPTION_LIMIT = 1024  # characters Telegram allows in a media caption
# Telegram allows a group about 20 bot messages a minute, edits included: progress edits
# of all jobs in a group take at most half of that, the rest is for answers and videos.
GROUP_PROGRESS_GAP = 6.0
# Bad Requests that say the chat refuses the bot for good, as Telegram words them (a Forbidden
# always does: blocked by the user, kicked from the group, a user who never started the bot).
REFUSING = re.compile(r"not\senough\srights|have\sno\srights|need\sadministrator\srights"
                      r"|chat_write_forbidden|chat\snot\sfound", re.IGNORECASE)


class TelegramCourier(ChatCourier):
    def __init__(self, bot: Bot, settings: TelegramSettings, menus: Menus | None = None):
        super().__init__(settings)
        self.bot, self.settings, self.menus = bot, settings, menus

    def status_key(self, job: Job) -> Hashable | None:
        status = job.reply_to.get("status_message_id")
        return (job.reply_to["chat_id"], status) if status else None

    def chat_key(self, job: Job) -> Hashable | None:
        return int(job.reply_to["chat_id"])

    def chat_gap(self, job: Job) -> float:
        return GROUP_PROGRESS_GAP if job.reply_to.get("group") else 0.0

    def upload_limit(self, job: Job) -> int:
        return int(self.settings.upload_limit_mb * 1024 * 1024)

    def upload_limit_text(self, job: Job) -> str:
        return messages.telegram_upload_limit(self.settings.upload_limit_mb)

    async def edit_message(self, job: Job, text: str) -> bool:
        return await self._edit(job.reply_to["chat_id"], job.reply_to["status_message_id"], text)

    def private_reply_to(self, job: Job) -> dict[str, Any] | None:
        owner = job.user_key.split(":", 1)[1]
        if not owner.isdigit() or int(owner) == int(job.reply_to["chat_id"]):
            return None  # a channel's or an anonymous admin's key, or the private chat refused already
        return {"chat_id": int(owner), "photo_message_id": None}

    def history_where(self, job: Job) -> str:
        return messages.TELEGRAM_HISTORY_WHERE if job.reply_to.get("group") else ""

    async def alert_admins(self, text: str) -> None:
        """A message for the admins (a [spend] cap): to each of ``[telegram] admins`` privately."""
        for admin in self.settings.admins:
            try:
                await self.bot.send_message(admin, text)
            except TelegramError as err:  # e.g. an admin who never started the bot: the others still hear
                log.warning("admin alert to %s not sent (%s)", admin, err)

    async def post(self, job: Job, text: str, video: Video | None) -> None:
        try:
            await self._post(job, text, video)
        except (Forbidden, BadRequest) as err:
            if isinstance(err, Forbidden) or REFUSING.search(err.message):
                raise DeliveryRefused(err.message) from err
            raise

    async def _post(self, job: Job, text: str, video: Video | None) -> None:
        chat, photo = job.reply_to["chat_id"], job.reply_to.get("photo_message_id")
        reply = ReplyParameters(message_id=photo, allow_sending_without_reply=True) if photo else None
        if video is None:
            await self.bot.send_message(chat, text, reply_parameters=reply)
            return
        buttons = await self.menus.results(job) if self.menus else None
        with video.path.open("rb") as file:
            await self.bot.send_video(
                chat, file, caption=text[:CAPTION_LIMIT], reply_parameters=reply, reply_markup=buttons,
                has_spoiler=video.nsfw, supports_streaming=True,
                filename=f"kling-{job.id}.mp4", write_timeout=120, read_timeout=120)

    async def edit(self, chat_id: int, message_id: int, text: str) -> bool:
        """Edit a status message before its job exists, in order with the job's edits."""
        return await self.ordered_edit((chat_id, message_id), text,
                                       lambda latest: self._edit(chat_id, message_id, latest))

    async def _edit(self, chat_id: int, message_id: int, text: str) -> bool:
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
