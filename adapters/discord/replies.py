"""How an interaction becomes a job's status message, shared by every way a job starts.

A slash command, a menu pick, a result button and a modal all end the same way: a
public status message (the deferred "thinking" reply, or a followup when the
interaction was answered already), the job's ``reply_to`` built from that message and
the interaction's token, then the engine's answer: the status message shows the
queued job, or is deleted and the refusal goes to the user alone.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from adapters.discord.kit import adapter_of, fit, refusal_buttons
from bot import messages
from bot.jobs import Accepted, Rejected

TOKEN_LIFETIME = 15 * 60  # seconds an interaction token can edit and send

ReplyTo = dict[str, Any]


class Persistent(discord.ui.View):
    """A view of ``DynamicItem``s only: its buttons are answered by their custom ids
    (``client.add_dynamic_items``), also after a restart, so nothing is kept in memory.

    It never times out: discord.py gives ephemeral views a 15-minute timeout, and a
    view that times out unregisters the templates of its dynamic items for everyone.
    """

    def __init__(self, *items: discord.ui.Item[Any]):
        super().__init__(timeout=None)
        for item in items:
            self.add_item(item)

    @property
    def timeout(self) -> float | None:
        return None

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        pass  # see the class docstring


def reply_to(interaction: discord.Interaction, status_id: int) -> ReplyTo:
    """Where a job answers: the status message, edited (and the video sent) through the
    interaction's webhook while its token lives, then in the channel."""
    channel = interaction.channel
    return {"application_id": interaction.application_id, "token": interaction.token,
            "token_expires": time.time() + TOKEN_LIFETIME,
            "message_id": status_id, "channel_id": interaction.channel_id,
            "guild_id": interaction.guild_id, "user_id": interaction.user.id,
            "filesize_limit": interaction.filesize_limit,
            "nsfw_channel": bool(channel and getattr(channel, "nsfw", False))}


async def open_status(interaction: discord.Interaction) -> discord.Message:
    """The public message that will show a job: the deferred reply, or a followup when the
    interaction was answered already (a menu pick that edited its menu)."""
    if interaction.response.is_done():
        return await interaction.followup.send(messages.CHECKING_PHOTO, wait=True)
    await interaction.response.defer(thinking=True)
    return await interaction.original_response()


async def refuse(interaction: discord.Interaction, status: discord.Message, text: str,
                 view: discord.ui.View | None = None) -> None:
    """A refusal after the status message exists: the message goes, the refusal is private
    (with ``view``'s buttons: the buy buttons of an out-of-credits refusal)."""
    await interaction.followup.delete_message(status.id)
    extra: dict[str, Any] = {"view": view} if view is not None else {}
    await interaction.followup.send(fit(text), ephemeral=True, **extra)


async def start_job(interaction: discord.Interaction,
                    start: Callable[[ReplyTo], Awaitable[Accepted | Rejected]]) -> None:
    """Open a status message, let ``start`` hand the engine a job answering there, and
    show the engine's answer (queued, or refused privately)."""
    status = await open_status(interaction)
    result = await start(reply_to(interaction, status.id))
    if isinstance(result, Rejected):
        await refuse(interaction, status, result.text, refusal_buttons(adapter_of(interaction).engine, result))
        return
    await interaction.followup.edit_message(status.id, content=result.text)
