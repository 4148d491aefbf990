"""The context menu's effect picker: a private menu of popular effects for a message's
image, or any effect typed by name.

Its select, its button and the form the button opens are answered by their custom ids,
which name the message (``kling:ctx:<channel>:<message>``), so they work after a restart
too. The image is the one the context menu resolved while this process remembers it
(``kit.Targets``), else the message read again over REST (attachment URLs expire).

A custom id is the client's word: it may name only a message of the channel it is used
in, read through that channel (``kit.own_channel``), never one of a channel
the user may not see.
"""

from __future__ import annotations

from typing import Any

import discord

from adapters.discord import forms, replies
from adapters.discord.items import ByMessage, EffectsMenu, KeyedButton
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

MENU_SIZE = 24  # popular effects in the menu


async def open_menu(adapter: Adapter, interaction: discord.Interaction, message: discord.Message) -> None:
    """The context menu: a private menu of popular effects for a message's image."""
    if refusal := adapter.channel_refusal(interaction):
        await answer(interaction, refusal)
        return
    image = image_in(message)
    if image is None:
        await answer(interaction, messages.NO_IMAGE_IN_MESSAGE)
        return
    adapter.targets.remember(message.channel.id, message.id, image)
    popular = (await adapter.engine.popular_effects())[:MENU_SIZE]
    cost = adapter.engine.quote("effect", None, Params(effect=popular[0]))
    have = (await adapter.engine.balance(user_of(interaction.user))).total
    view = replies.Persistent(PickerMenu(message.channel.id, message.id, effects=popular, cost=cost),
                              PickerByName(message.channel.id, message.id))
    await interaction.response.send_message(messages.pick_effect_priced(cost, have), view=view, ephemeral=True)


async def pick(interaction: discord.Interaction, channel_id: int, message_id: int, effect: str) -> None:
    """An effect chosen in the menu (or typed): checked first, so a refusal keeps the menu."""
    adapter = adapter_of(interaction)
    if not own_channel(interaction, channel_id):
        await answer(interaction, messages.DISCORD_PHOTO_GONE)  # as a message it cannot see
        return
    if refusal := adapter.channel_refusal(interaction, channel_id):  # every pick here would be refused
        await interaction.response.edit_message(content=refusal, view=None)
        return
    if rejected := await adapter.engine.precheck(user_of(interaction.user), "effect", None, Params(effect=effect)):
        await answer_refusal(interaction, rejected)  # the menu stays, for another pick
        return
    if interaction.message is not None:
        title = catalog.effect_title(catalog.resolve_effect(effect))  # a known effect: the check passed
        await interaction.response.edit_message(content=messages.effect_chosen(title), view=None)
    image = adapter.targets.recall(channel_id, message_id)
    if image is None:  # a menu from before a restart
        if not interaction.response.is_done():
            await interaction.response.defer()  # reading the message can take longer than Discord waits
        message = await photo_message(interaction, channel_id, message_id)
        image = image_in(message) if message is not None else None
    if image is None:
        await answer(interaction, messages.DISCORD_PHOTO_GONE)
        return
    await adapter.generate(interaction, "effect", Params(effect=effect), image)


class PickerMenu(ByMessage, EffectsMenu):
    what = "ctx"

    async def callback(self, interaction: discord.Interaction) -> None:
        await pick(interaction, self.channel_id, self.message_id, self.item.values[0])


class PickerByName(ByMessage, KeyedButton):
    what, label = "ctxname", messages.ANOTHER_EFFECT

    async def callback(self, interaction: discord.Interaction) -> None:
        if not own_channel(interaction, self.channel_id):
            await answer(interaction, messages.DISCORD_PHOTO_GONE)
            return
        await NAME_FORM.open(interaction, self.channel_id, self.message_id)


async def _name_typed(interaction: discord.Interaction, ids: tuple[int, ...], name: str) -> None:
    channel_id, message_id = ids
    await pick(interaction, channel_id, message_id, name)


NAME_FORM = forms.Form("kling:ctxform", ("channel", "message"), messages.COMMANDS["context menu"],
                       messages.EFFECT_NAME, messages.EFFECT_NAME_EXAMPLE, forms.NAME_LENGTH, _name_typed)
DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (PickerMenu, PickerByName)
FORMS = (NAME_FORM,)
