"""First contact: a photo sent to the bot gets the effect menu, with prices.

A direct message, or a server message that mentions the bot, is answered (the
content of both reaches a bot without the privileged message-content intent). With a
photo: a menu of popular effects and a line on /animate and /avatar; without one: a
pointer to /help. The menu is persistent: its custom id names the photo's message,
read again over REST when someone picks, so it also works after a restart.
"""

from __future__ import annotations

from typing import Any

import discord

from adapters.discord import forms, replies
from adapters.discord.items import MENU_SIZE, ByMessage, EffectsMenu, KeyedButton
from adapters.discord.kit import (
    Adapter,
    adapter_of,
    answer,
    answer_refusal,
    image_in,
    own_channel,
    photo_message,
    user_of,
)
from bot import catalog, messages
from bot.catalog import Params


async def on_message(adapter: Adapter, message: discord.Message) -> None:
    """Answer a photo (or a word) addressed to the bot; ignore everything else."""
    client = adapter.client
    if message.author.bot or client.user is None:
        return
    direct = isinstance(message.channel, discord.DMChannel)
    if not direct and all(user.id != client.user.id for user in message.mentions):
        return
    allowed = adapter.settings.allowed_channels
    if allowed and message.channel.id not in allowed:
        return  # DMs too: a menu whose every pick is refused would only tease
    if image_in(message) is None:
        await message.reply(messages.TEXT_POINTER, mention_author=False)
        return
    engine = adapter.engine
    cost = engine.quote("effect", None, Params(effect=catalog.EFFECTS[0]))
    have = (await engine.balance(user_of(message.author))).total
    view = replies.Persistent(
        PhotoEffects(message.channel.id, message.id, effects=(await engine.popular_effects())[:MENU_SIZE],
                     cost=cost),
        PhotoEffectByName(message.channel.id, message.id))
    await message.reply(messages.discord_first_photo(cost, have), view=view, mention_author=False)


async def make(interaction: discord.Interaction, channel_id: int, message_id: int, effect: str) -> None:
    adapter = adapter_of(interaction)
    if not own_channel(interaction, channel_id):
        await answer(interaction, messages.DISCORD_PHOTO_GONE)  # as a message it cannot see
        return
    rejected = await adapter.engine.precheck(user_of(interaction.user), "effect", None, Params(effect=effect))
    if refusal := adapter.channel_refusal(interaction, channel_id) or rejected:
        await answer_refusal(interaction, refusal)
        return
    if not interaction.response.is_done():
        await interaction.response.defer()  # reading the message can take longer than Discord waits
    message = await photo_message(interaction, channel_id, message_id)
    image = image_in(message) if message is not None else None
    if message is None or image is None:
        await answer(interaction, messages.DISCORD_PHOTO_GONE)
        return
    if message.author.id != interaction.user.id:  # someone's photo is theirs to animate
        await answer(interaction, messages.DISCORD_MENU_NOT_YOURS)
        return
    await adapter.generate(interaction, "effect", Params(effect=effect), image)


class PhotoEffects(ByMessage, EffectsMenu):
    what = "pick"

    async def callback(self, interaction: discord.Interaction) -> None:
        await make(interaction, self.channel_id, self.message_id, self.item.values[0])


class PhotoEffectByName(ByMessage, KeyedButton):
    what, label = "pickname", messages.TYPE_EFFECT_NAME

    async def callback(self, interaction: discord.Interaction) -> None:
        if not own_channel(interaction, self.channel_id):
            await answer(interaction, messages.DISCORD_PHOTO_GONE)
            return
        await NAME_FORM.open(interaction, self.channel_id, self.message_id)


async def _name_typed(interaction: discord.Interaction, ids: tuple[int, ...], name: str) -> None:
    channel_id, message_id = ids
    await make(interaction, channel_id, message_id, name)


NAME_FORM = forms.Form("kling:pickform", ("channel", "message"), messages.COMMANDS["context menu"],
                       messages.EFFECT_NAME, messages.EFFECT_NAME_EXAMPLE, forms.NAME_LENGTH, _name_typed)
DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (PhotoEffects, PhotoEffectByName)
FORMS = (NAME_FORM,)
