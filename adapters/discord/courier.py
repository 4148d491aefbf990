"""Shows a job's life in Discord: edits the interaction's message, then posts the MP4
with the result buttons under it (``results.py``).

The interaction token lives 15 minutes. While it does, progress edits and the video
go through the interaction's webhook; after that (or when Discord says "Invalid
Webhook Token") the video is posted in the channel as a new message that mentions
the user and replies to the original. Everything needed is in the job's reply_to.
A channel that refuses the bot for good (403: Missing Permissions, Missing Access;
or gone) raises ``DeliveryRefused``; the video is then sent to the user as a DM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from typing import Any

import discord

from adapters.chat import ChatCourier
from adapters.discord import results
from bot import messages
from bot.config import DiscordSettings
from bot.engine import Engine
from bot.jobs import DeliveryRefused, Job, Video

log = logging.getLogger(__name__)

TOKEN_MARGIN = 60  # stop using a token a minute early: an upload can take that long
INVALID_WEBHOOK_TOKEN = 50027
UNKNOWN_CHANNEL = 10003  # deleted: refuses for good, as a 403 (missing permissions or access) does
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # Discord's limit for servers without boosts


class DiscordCourier(ChatCourier):
    def __init__(self, client: discord.Client, settings: DiscordSettings, engine: Engine):
        # Wall-clock time: token expiry times are stored as Unix times in the job row.
        super().__init__(settings, clock=time.time)
        self.client, self.settings, self.engine = client, settings, engine

    def status_key(self, job: Job) -> Hashable | None:
        return int(job.reply_to["message_id"])

    def can_edit(self, job: Job) -> bool:
        # No cheap way to edit after the token expires; the result still arrives.
        return self.clock() < float(job.reply_to.get("token_expires", 0)) - TOKEN_MARGIN

    def addressed(self, job: Job, text: str) -> str:
        # Starts with the owner's mention: the result buttons read the owner back from it.
        return f"<@{job.reply_to['user_id']}> {text}"

    def upload_limit(self, job: Job) -> int:
        return int(job.reply_to.get("filesize_limit", DEFAULT_UPLOAD_LIMIT))

    def upload_limit_text(self, job: Job) -> str:
        return messages.DISCORD_UPLOAD_LIMIT

    def _webhook(self, job: Job) -> discord.Webhook:
        return discord.Webhook.partial(job.reply_to["application_id"], job.reply_to["token"],
                                       client=self.client)

    async def edit_message(self, job: Job, text: str) -> bool:
        try:
            await self._webhook(job).edit_message(job.reply_to["message_id"], content=text)
            return True
        except discord.HTTPException as err:
            log.info("job %s: cannot edit its message (%s)", job.id, err.status)
            return False

    def private_reply_to(self, job: Job) -> dict[str, Any] | None:
        if job.reply_to.get("dm_user_id") or job.reply_to.get("guild_id") is None:
            return None  # the job's own chat is the DM (made there, or sent there), and it refused
        return {"dm_user_id": job.reply_to["user_id"], "user_id": job.reply_to["user_id"],
                "nsfw_channel": False}

    async def alert_admins(self, text: str) -> None:
        """A message for the admins (a [spend] cap): posted in ``[discord] admin_channel``, if set."""
        if self.settings.admin_channel:
            channel = self.client.get_partial_messageable(self.settings.admin_channel)
            await channel.send(text, allowed_mentions=discord.AllowedMentions.none())

    async def post(self, job: Job, text: str, video: Video | None) -> None:
        try:
            await self._post(job, text, video)
        except discord.HTTPException as err:
            if isinstance(err, discord.Forbidden) or err.code == UNKNOWN_CHANNEL:
                raise DeliveryRefused(f"{err.status} {err.code} {err.text}") from err
            raise

    async def _post(self, job: Job, text: str, video: Video | None) -> None:
        if dm_user := job.reply_to.get("dm_user_id"):
            dm = await self.client.create_dm(discord.Object(dm_user))
            await dm.send(text, file=_file(job, video), view=await _buttons(job, video, self.engine),
                          allowed_mentions=_mention_only(job))
            return
        if self.can_edit(job):
            try:
                buttons = await _buttons(job, video, self.engine)
                await self._webhook(job).send(text, file=_file(job, video), view=buttons,
                                              allowed_mentions=_mention_only(job))
                return
            except discord.HTTPException as err:
                if not _token_gone(err):
                    raise
                log.info("job %s: interaction token no longer valid; posting in the channel", job.id)
        reply = job.reply_to
        channel = self.client.get_partial_messageable(reply["channel_id"], guild_id=reply.get("guild_id"))
        reference = discord.MessageReference(message_id=reply["message_id"], channel_id=reply["channel_id"],
                                             guild_id=reply.get("guild_id"), fail_if_not_exists=False)
        buttons = await _buttons(job, video, self.engine)
        await channel.send(text, file=_file(job, video), view=buttons, reference=reference,
                           allowed_mentions=_mention_only(job))


def _file(job: Job, video: Video | None) -> Any:
    """A fresh attachment for each send (a File is consumed by the send that uses it);
    discord.py's MISSING when there is none."""
    if video is None:
        return discord.utils.MISSING
    return discord.File(video.path, filename=f"kling-{job.id}.mp4", spoiler=video.nsfw)


async def _buttons(job: Job, video: Video | None, engine: Engine) -> Any:
    """The result buttons under a video (again, another effect, a prompt); none under text,
    nor when the photo is not kept (the buttons could only refuse)."""
    if video is None or not await engine.media_kept(job):
        return discord.utils.MISSING
    return results.result_view(job.id)


def _mention_only(job: Job) -> discord.AllowedMentions:
    return discord.AllowedMentions(everyone=False, roles=False,
                                   users=[discord.Object(job.reply_to["user_id"])])


def _token_gone(err: discord.HTTPException) -> bool:
    return err.code == INVALID_WEBHOOK_TOKEN or err.status in (401, 404)
