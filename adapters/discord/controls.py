"""The admins' controls as slash commands: /pause, /resume, /ban, /unban and /credits show.

Each checks ``is_admin`` (configured admins or Manage Server) and answers ephemerally;
the rules are the engine's (``bot.engine.controls``).
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from adapters.discord.commands import credits, is_admin
from adapters.discord.kit import adapter_of, answer, user_of
from bot import messages


def _by(interaction: discord.Interaction) -> str:
    return f"discord:{interaction.user.id}"


@app_commands.command(name="pause", description=messages.COMMANDS["pause"])
@app_commands.describe(reason=messages.OPTIONS["pause reason"], refund=messages.OPTIONS["pause refund"])
@app_commands.default_permissions(manage_guild=True)
@app_commands.check(is_admin)
async def pause(interaction: discord.Interaction, reason: app_commands.Range[str, 0, 200] = "",
                refund: bool = False) -> None:
    if refund:  # each refunded owner is told first: that can outlast Discord's three seconds to answer
        await interaction.response.defer(ephemeral=True, thinking=True)
    refunded = await adapter_of(interaction).engine.pause(reason, _by(interaction), refund=refund)
    await answer(interaction, messages.now_paused(reason.strip(), len(refunded)))


@app_commands.command(name="resume", description=messages.COMMANDS["resume"])
@app_commands.default_permissions(manage_guild=True)
@app_commands.check(is_admin)
async def resume(interaction: discord.Interaction) -> None:
    was = await adapter_of(interaction).engine.resume(_by(interaction))
    await answer(interaction, messages.NOW_RESUMED if was else messages.NOT_PAUSED)


@app_commands.command(name="ban", description=messages.COMMANDS["ban"])
@app_commands.describe(member=messages.OPTIONS["ban member"], reason=messages.OPTIONS["ban reason"])
@app_commands.default_permissions(manage_guild=True)
@app_commands.check(is_admin)
async def ban(interaction: discord.Interaction, member: discord.User,
              reason: app_commands.Range[str, 0, 200] = "") -> None:
    # A ban would stop no one: a bot makes no requests, an admin's commands ignore bans.
    if member.bot or member.id in adapter_of(interaction).settings.admins:
        await answer(interaction, messages.BAN_A_BOT if member.bot else messages.ban_an_admin("discord"))
        return
    fresh = await adapter_of(interaction).engine.ban(user_of(member).key, _by(interaction), reason)
    await answer(interaction, messages.now_banned(member.mention, already=not fresh))


@app_commands.command(name="unban", description=messages.COMMANDS["unban"])
@app_commands.describe(member=messages.OPTIONS["ban member"])
@app_commands.default_permissions(manage_guild=True)
@app_commands.check(is_admin)
async def unban(interaction: discord.Interaction, member: discord.User) -> None:
    was = await adapter_of(interaction).engine.unban(user_of(member).key)
    await answer(interaction, messages.now_unbanned(member.mention, was))


@credits.command(name="show", description=messages.COMMANDS["credits show"])
@app_commands.describe(member=messages.OPTIONS["member"])
@app_commands.check(is_admin)
async def show(interaction: discord.Interaction, member: discord.User) -> None:
    engine = adapter_of(interaction).engine
    await answer(interaction, await engine.credits_report(user_of(member), member.mention))


COMMANDS: tuple[app_commands.Command[Any, ..., Any], ...] = (pause, resume, ban, unban)
