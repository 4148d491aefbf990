"""The slash commands and the message context menu, one function each.

Defined as in discord.py's ``examples/app_commands``: module-level functions whose
annotated parameters become options, every option described. Wording comes from
``bot.messages``; /animate's model, duration and aspect ratio are autocompleted from
the engine's live catalog (the durations and ratios of the model chosen so far), so the
command's options stay one stable set while the models change. ``install`` puts them on a client's command tree.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import discord
from discord import app_commands

from adapters.chat import jobs_text
from adapters.discord.kit import AUTOCOMPLETE_LIMIT, PLATFORM, adapter_of, answer, user_of
from bot import catalog, messages
from bot.catalog import Params
from bot.engine import Engine

log = logging.getLogger(__name__)

def is_admin(interaction: discord.Interaction) -> bool:
    """Server managers and the configured admins. ``interaction.permissions`` is what
    Discord resolved for this member here; it needs no cached guild roles."""
    admins = adapter_of(interaction).settings.admins
    return interaction.user.id in admins or interaction.permissions.manage_guild


# --- making videos ---------------------------------------------------------------------

@app_commands.command(name="effect", description=messages.COMMANDS["effect"])
@app_commands.describe(scene=messages.OPTIONS["scene"], image=messages.OPTIONS["image"])
async def effect(interaction: discord.Interaction, scene: str, image: discord.Attachment) -> None:
    await adapter_of(interaction).generate(interaction, "effect", Params(effect=scene), image)


@effect.autocomplete("scene")
async def scene_choices(interaction: discord.Interaction,
                        current: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=catalog.effect_title(name), value=name)
            for name in catalog.search_effects(current, limit=AUTOCOMPLETE_LIMIT)]


@app_commands.command(name="animate", description=messages.COMMANDS["animate"])
@app_commands.describe(
    image=messages.OPTIONS["image"], prompt=messages.OPTIONS["prompt"],
    model=messages.OPTIONS["model"],
    duration=messages.OPTIONS["duration"], negative_prompt=messages.OPTIONS["negative_prompt"],
    guidance=messages.OPTIONS["guidance"], end_image=messages.OPTIONS["end_image"],
    sound=messages.OPTIONS["sound"], aspect=messages.OPTIONS["aspect"])
async def animate(interaction: discord.Interaction, image: discord.Attachment, prompt: str,
                  model: str | None = None,
                  duration: app_commands.Range[int, 1, 60] | None = None,
                  negative_prompt: str | None = None,
                  guidance: app_commands.Range[float, 0.0, 1.0] | None = None,
                  end_image: discord.Attachment | None = None,
                  sound: bool | None = None,
                  aspect: str | None = None) -> None:
    params = Params(prompt=prompt, negative_prompt=negative_prompt, guidance=guidance, duration=duration,
                    has_end_image=end_image is not None, sound=sound, aspect=aspect)
    await adapter_of(interaction).generate(interaction, "animate", params, image, model=model,
                                           end_image=end_image)


def _chosen_model(interaction: discord.Interaction) -> catalog.Model | None:
    """The model the user picked so far in this /animate (the default before any)."""
    offer = adapter_of(interaction).engine.catalog
    try:
        return offer.resolve_model(getattr(interaction.namespace, "model", None), "animate")
    except catalog.ValidationError:
        return None


@animate.autocomplete("model")
async def model_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    engine = adapter_of(interaction).engine
    return [app_commands.Choice(name=messages.model_choice(
                model.key, *engine.model_price(model)), value=model.key)
            for model in engine.catalog.search_models("animate", current, limit=AUTOCOMPLETE_LIMIT)]


@animate.autocomplete("duration")
async def duration_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[int]]:
    model = _chosen_model(interaction)
    lengths = list(model.durations) if model else []
    typed = str(current or "").strip()
    return [app_commands.Choice(name=f"{seconds} s", value=seconds)
            for seconds in lengths if not typed or str(seconds).startswith(typed)][:AUTOCOMPLETE_LIMIT]


@animate.autocomplete("aspect")
async def aspect_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    model = _chosen_model(interaction)
    return [app_commands.Choice(name=ratio, value=ratio) for ratio in (model.aspects if model else ())
            if current.strip() in ratio][:AUTOCOMPLETE_LIMIT]


@app_commands.command(name="avatar", description=messages.COMMANDS["avatar"])
@app_commands.describe(image=messages.OPTIONS["image"], audio=messages.OPTIONS["audio"],
                       prompt=messages.OPTIONS["avatar prompt"])
async def avatar(interaction: discord.Interaction, image: discord.Attachment,
                 audio: discord.Attachment, prompt: str | None = None) -> None:
    await adapter_of(interaction).generate(interaction, "avatar", Params(prompt=prompt, has_audio=True),
                                           image, audio=audio)


@app_commands.context_menu(name=messages.COMMANDS["context menu"])
async def animate_message(interaction: discord.Interaction, message: discord.Message) -> None:
    await adapter_of(interaction).effect_picker(interaction, message)


# --- questions --------------------------------------------------------------------------

@app_commands.command(name="quota", description=messages.COMMANDS["quota"])
async def quota(interaction: discord.Interaction) -> None:
    balance = await adapter_of(interaction).engine.balance(user_of(interaction.user))
    await answer(interaction, balance.text())


@app_commands.command(name="jobs", description=messages.COMMANDS["jobs"])
async def jobs(interaction: discord.Interaction) -> None:
    await answer(interaction, await jobs_text(adapter_of(interaction).engine, user_of(interaction.user)))


@app_commands.command(name="cancel", description=messages.COMMANDS["cancel"])
@app_commands.describe(job=messages.OPTIONS["job"])
async def cancel(interaction: discord.Interaction, job: int) -> None:
    text = await adapter_of(interaction).engine.cancel(user_of(interaction.user), job)
    await answer(interaction, text)


@app_commands.command(name="effects", description=messages.COMMANDS["effects"])
async def effects(interaction: discord.Interaction) -> None:
    await answer(interaction, messages.discord_effects([catalog.effect_title(name) for name in catalog.EFFECTS]))


@app_commands.command(name="models", description=messages.COMMANDS["models"])
async def models(interaction: discord.Interaction) -> None:
    await answer(interaction, adapter_of(interaction).engine.models_text())


@app_commands.command(name="help", description=messages.COMMANDS["help"])
async def help_(interaction: discord.Interaction) -> None:
    engine = adapter_of(interaction).engine
    balance = await engine.balance(user_of(interaction.user))
    await answer(interaction, messages.discord_help(len(catalog.EFFECTS), engine.price_text()) + "\n"
                 + messages.discord_help_more(balance.text()))


# --- admins -------------------------------------------------------------------------------

# Credits one /credits grant or set may move, as Telegram's /grant and the command line:
# Discord itself would take up to 2**53, and a few such grants leave the databases' integers.
MAX_CREDITS = 1_000_000_000

credits = app_commands.Group(name="credits", description=messages.COMMANDS["credits"],
                             default_permissions=discord.Permissions(manage_guild=True),
                             guild_only=True)


@credits.command(name="grant", description=messages.COMMANDS["credits grant"])
@app_commands.describe(member=messages.OPTIONS["member"], amount=messages.OPTIONS["amount"])
@app_commands.check(is_admin)
async def grant(interaction: discord.Interaction, member: discord.User,
                amount: app_commands.Range[int, -MAX_CREDITS, MAX_CREDITS]) -> None:
    balance = await adapter_of(interaction).engine.grant(user_of(member), amount,
                                                   by=f"discord:{interaction.user.id}")
    await answer(interaction, messages.now_has_credits(member.mention, balance.total))


@credits.command(name="set", description=messages.COMMANDS["credits set"])
@app_commands.describe(member=messages.OPTIONS["member"], amount=messages.OPTIONS["amount"])
@app_commands.check(is_admin)
async def set_(interaction: discord.Interaction, member: discord.User,
               amount: app_commands.Range[int, 0, MAX_CREDITS]) -> None:
    balance = await adapter_of(interaction).engine.set_credits(user_of(member), amount,
                                                         by=f"discord:{interaction.user.id}")
    await answer(interaction, messages.now_has_credits(member.mention, balance.total))


@app_commands.command(name="usage", description=messages.COMMANDS["usage"])
@app_commands.default_permissions(manage_guild=True)
@app_commands.guild_only()
@app_commands.check(is_admin)
async def usage(interaction: discord.Interaction) -> None:
    since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    jobs_today, spent = await adapter_of(interaction).engine.usage_since(
        PLATFORM, since.timestamp(), "guild_id", interaction.guild_id)
    await answer(interaction, messages.usage_today(jobs_today, spent))


async def on_tree_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    if isinstance(error, app_commands.CheckFailure):
        text = messages.ADMINS_ONLY
    else:
        log.error("command failed: %s: %s", type(error).__name__, error)
        text = messages.SOMETHING_WENT_WRONG
    await answer(interaction, text)


def install(tree: app_commands.CommandTree[discord.Client], engine: Engine,
            *more: app_commands.Command[Any, ..., Any]) -> None:
    """Put every command (and ``more``) on a tree, the model choices priced by ``engine``."""
    everything: list[app_commands.Command[Any, ..., Any] | app_commands.ContextMenu | app_commands.Group] = [
        effect, animate, avatar, animate_message, quota, jobs, cancel, effects, models, help_, credits, usage, *more]
    for command in everything:
        tree.add_command(command)
    tree.error(on_tree_error)
