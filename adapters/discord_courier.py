"""Shows a job's life in Discord: edits the interaction's message, then posts the MP4.

The interaction token lives 15 minutes. While it does, progress edits and the video
go through the interaction's webhook; after that (or when Discord says "Invalid
Webhook Token") the video is posted in the channel as a new message that mentions
the user and replies to the original. Everything needed is in the job's reply_to.
"""

from __future__ import annotations

import logging
import time

import discord

from bot import catalog
from bot.config import DiscordSettings
from bot.jobs import Job, Progress, Video

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 15 * 60
TOKEN_MARGIN = 60  # stop using a token a minute early: an upload can take that long
INVALID_WEBHOOK_TOKEN = 50027


class DiscordCourier:
    def __init__(self, client: discord.Client, settings: DiscordSettings, clock=time.time):
        self.client = client
        self.settings = settings
        self.clock = clock
        self._last_edit: dict[int, tuple[float, str]] = {}

    def _token_alive(self, job: Job) -> bool:
        return self.clock() < job.reply_to.get("token_expires", 0) - TOKEN_MARGIN

    def _webhook(self, job: Job) -> discord.Webhook:
        return discord.Webhook.partial(job.reply_to["application_id"], job.reply_to["token"],
                                       client=self.client)

    async def progress(self, job: Job, update: Progress) -> None:
        if not self._token_alive(job):
            return  # no cheap way to edit after expiry; the result still arrives
        message = job.reply_to["message_id"]
        now = self.clock()
        when, stage = self._last_edit.get(message, (0.0, ""))
        if stage == update.stage and now - when < self.settings.progress_interval:
            return
        self._last_edit[message] = (now, update.stage)
        await self._edit(job, f"Job {job.id} ({job.label}): {update.text()}")

    async def deliver(self, job: Job, video: Video) -> None:
        content, file = self._result(job, video)
        if self._token_alive(job):
            try:
                await self._webhook(job).send(content, file=file or discord.utils.MISSING,
                                              allowed_mentions=_mention_only(job))
                await self._edit(job, f"Job {job.id} ({job.label}): done.")
                self._last_edit.pop(job.reply_to["message_id"], None)
                return
            except discord.HTTPException as err:
                if not _token_gone(err):
                    raise
                log.info("job %s: interaction token no longer valid; posting in the channel", job.id)
                content, file = self._result(job, video)  # a File is consumed by a send
        await self._post_in_channel(job, content, file)
        self._last_edit.pop(job.reply_to["message_id"], None)

    def _result(self, job: Job, video: Video) -> tuple[str, discord.File | None]:
        mention = f"<@{job.reply_to['user_id']}>"
        caption = f"{mention} {job.label} · {catalog.model_by_id(job.model_id).title}"
        policy = self.settings.nsfw
        if video.nsfw and (policy == "block" or
                           (policy == "nsfw_channels_only" and not job.reply_to.get("nsfw_channel"))):
            return f"{mention} job {job.id}: WaveSpeed flagged the video as NSFW, so it is not posted here.", None
        if video.size > job.reply_to.get("filesize_limit", 10 * 1024 * 1024):
            return (f"{caption}\nThe video is {video.size / 1048576:.0f} MB, over this server's upload "
                    f"limit. Download it here (kept for 7 days): {video.url}"), None
        return caption, discord.File(video.path, filename=f"kling-{job.id}.mp4", spoiler=video.nsfw)

    async def fail(self, job: Job, reason: str) -> None:
        self._last_edit.pop(job.reply_to["message_id"], None)
        if self._token_alive(job) and await self._edit(job, f"Job {job.id}: {reason}"):
            return
        await self._post_in_channel(job, f"<@{job.reply_to['user_id']}> job {job.id}: {reason}", None)

    async def _edit(self, job: Job, text: str) -> bool:
        try:
            await self._webhook(job).edit_message(job.reply_to["message_id"], content=text)
            return True
        except discord.HTTPException as err:
            log.info("job %s: cannot edit its message (%s)", job.id, err.status)
            return False

    async def _post_in_channel(self, job: Job, content: str, file: discord.File | None) -> None:
        reply = job.reply_to
        channel = self.client.get_partial_messageable(reply["channel_id"], guild_id=reply.get("guild_id"))
        reference = discord.MessageReference(message_id=reply["message_id"], channel_id=reply["channel_id"],
                                             guild_id=reply.get("guild_id"), fail_if_not_exists=False)
        await channel.send(content, file=file or discord.utils.MISSING, reference=reference,
                           allowed_mentions=_mention_only(job))


def _mention_only(job: Job) -> discord.AllowedMentions:
    return discord.AllowedMentions(everyone=False, roles=False,
                                   users=[discord.Object(job.reply_to["user_id"])])


def _token_gone(err: discord.HTTPException) -> bool:
    return err.code == INVALID_WEBHOOK_TOKEN or err.status in (401, 404)
