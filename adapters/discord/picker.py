"""The context menu's effect picker: a select of popular effects, or type any name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord

from bot import catalog, messages
from bot.catalog import Params

if TYPE_CHECKING:
    from adapters.discord.bot import DiscordAdapter, Source

MENU_TIMEOUT = 600  # seconds the ephemeral menu answers


class EffectPicker(discord.ui.View):
    """The ephemeral menu of the context-menu command: popular effects, or type any."""

    def __init__(self, adapter: DiscordAdapter, image: Source, popular: list[str], cost: int):
        super().__init__(timeout=MENU_TIMEOUT)
        self.adapter, self.image = adapter, image
        menu: discord.ui.Select[EffectPicker] = self.choose
        menu.options = [discord.SelectOption(label=catalog.effect_title(name), value=name,
                                             description=messages.credits(cost)) for name in popular]

    @discord.ui.select(placeholder=messages.POPULAR_EFFECTS, min_values=1, max_values=1)
    async def choose(self, interaction: discord.Interaction, select: discord.ui.Select[Any]) -> None:
        await self.run(interaction, select.values[0])

    @discord.ui.button(label=messages.ANOTHER_EFFECT, style=discord.ButtonStyle.secondary)
    async def other(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_modal(EffectNameModal(self))

    async def run(self, interaction: discord.Interaction, effect: str) -> None:
        if refusal := self.adapter.channel_refusal(interaction):
            await interaction.response.edit_message(content=refusal, view=None)
            return
        await interaction.response.edit_message(content=messages.effect_chosen(catalog.effect_title(effect)), view=None)
        await self.adapter.generate(interaction, "effect", Params(effect=effect), self.image)


class EffectNameModal(discord.ui.Modal):
    def __init__(self, picker: EffectPicker):
        super().__init__(title=messages.COMMANDS["context menu"])
        self.picker = picker
        self.effect: discord.ui.TextInput[EffectNameModal] = discord.ui.TextInput(
            label=messages.EFFECT_NAME, placeholder=messages.EFFECT_NAME_EXAMPLE)
        self.add_item(self.effect)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.picker.run(interaction, str(self.effect.value))
