"""/stats and /balance: the bot's figures and WaveSpeed's balance, for admins, ephemeral.

Both defer at once (the figures and the balance may take longer than Discord's three
seconds to answer), then send the answer as the interaction's follow-up; /stats attaches
the chart of the last 14 days as a PNG.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import discord
from discord import app_commands

from adapters.discord.commands import is_admin
from adapters.discord.kit import adapter_of, fit
from bot import messages


@app_commands.command(name="stats", description=messages.COMMANDS["stats"])
@app_commands.default_permissions(manage_guild=True)
@app_commands.check(is_admin)
async def stats(interaction: discord.Interaction) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    figures = await adapter_of(interaction).engine.stats()
    chart = await asyncio.to_thread(figures.chart_png)  # drawing takes a moment: not on the event loop
    # The figures quote users' names: a name like "@everyone" must not ping anyone.
    await interaction.followup.send(fit(figures.text()), ephemeral=True,
                                    allowed_mentions=discord.AllowedMentions.none(),
                                    file=discord.File(io.BytesIO(chart), filename=messages.STATS_CHART_FILENAME))


@app_commands.command(name="balance", description=messages.COMMANDS["balance"])
@app_commands.default_permissions(manage_guild=True)
@app_commands.check(is_admin)
async def balance(interaction: discord.Interaction) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    await interaction.followup.send(await adapter_of(interaction).engine.wavespeed_balance(), ephemeral=True)


COMMANDS: tuple[app_commands.Command[Any, ..., Any], ...] = (stats, balance)
