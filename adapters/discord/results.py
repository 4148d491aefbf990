"""The buttons under every delivered video: again, another effect, animate with a prompt.

Each is a ``DynamicItem``: its custom id carries the job (``kling:again:42``), so the
client answers it by that id alone, also after a restart, with nothing kept in memory.
Whoever presses is charged; the allow list and the engine's checks apply as to any
request, and refusals are private. The new job shows in a new public message.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self

import discord

from adapters.discord import replies
from adapters.discord.commands import adapter_of, answer, user_of
from bot import catalog, messages
from bot.catalog import Params

MENU_SIZE = 25  # a select holds 25 options
MODAL_TIMEOUT = 15 * 60  # seconds an unanswered modal is remembered

Button = discord.ui.Button[discord.ui.View]
Select = discord.ui.Select[discord.ui.View]


async def rerun(interaction: discord.Interaction, job_id: int, *, effect: str | None = None,
                prompt: str | None = None) -> None:
    """A new job from a delivered one, charged to whoever pressed, shown in a new message."""
    adapter = adapter_of(interaction)
    if refusal := adapter.channel_refusal(interaction):
        await answer(interaction, refusal)
        return
    user = user_of(interaction.user)
    await replies.start_job(interaction, lambda reply_to: adapter.engine.rerun(
        user, job_id, reply_to=reply_to, effect=effect, prompt=prompt))


async def refused(interaction: discord.Interaction, kind: catalog.Kind, params: Params, source: int) -> bool:
    """Answer privately when the presser could not start such a job anyway (channel, the
    result's photo no longer kept, credits, too many jobs), before a menu or a form is
    opened for nothing."""
    adapter = adapter_of(interaction)
    refusal = adapter.channel_refusal(interaction)
    rejected = adapter.engine.rerun_refusal(source) or adapter.engine.precheck(
        user_of(interaction.user), kind, None, params)
    if refusal is None and rejected:
        refusal = rejected.text
    if refusal is not None:
        await answer(interaction, refusal)
    return refusal is not None


class ByJob:
    """Rebuilds a job's button or menu from its custom id (``kling:<what>:<job id>``)."""

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> Self:
        return cls(int(match["job"]))  # type: ignore[call-arg]  # each subclass takes the job id


class TextModal(discord.ui.Modal):
    """One text field; its answer goes to ``run`` (a modal lives only in this process,
    which is fine: it is answered within minutes of the press that opened it)."""

    def __init__(self, title: str, label: str, placeholder: str, max_length: int,
                 run: Callable[[discord.Interaction, str], Awaitable[None]]):
        super().__init__(title=title, timeout=MODAL_TIMEOUT)
        self.run = run
        self.text: discord.ui.TextInput[TextModal] = discord.ui.TextInput(
            label=label, placeholder=placeholder, max_length=max_length,
            style=discord.TextStyle.paragraph if max_length > 100 else discord.TextStyle.short)
        self.add_item(self.text)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, str(self.text.value))


class Again(ByJob, discord.ui.DynamicItem[Button], template=r"kling:again:(?P<job>\d+)"):
    def __init__(self, job_id: int):
        super().__init__(discord.ui.Button(label=messages.BUTTON_AGAIN, style=discord.ButtonStyle.primary,
                                           custom_id=f"kling:again:{job_id}"))
        self.job_id = job_id

    async def callback(self, interaction: discord.Interaction) -> None:
        await rerun(interaction, self.job_id)


class OtherEffect(ByJob, discord.ui.DynamicItem[Button], template=r"kling:fx:(?P<job>\d+)"):
    """Opens a private menu of popular effects (readable names, costs) for the same photo."""

    def __init__(self, job_id: int):
        super().__init__(discord.ui.Button(label=messages.BUTTON_OTHER_EFFECT, style=discord.ButtonStyle.secondary,
                                           custom_id=f"kling:fx:{job_id}"))
        self.job_id = job_id

    async def callback(self, interaction: discord.Interaction) -> None:
        if await refused(interaction, "effect", Params(effect=catalog.EFFECTS[0]), self.job_id):
            return
        engine = adapter_of(interaction).engine
        cost = engine.quote("effect", None, Params(effect=catalog.EFFECTS[0]))
        have = engine.balance(user_of(interaction.user)).total
        view = replies.Persistent(EffectMenu(self.job_id, engine.popular_effects()[:MENU_SIZE], cost),
                                  EffectByName(self.job_id))
        await interaction.response.send_message(messages.pick_effect_priced(cost, have), view=view, ephemeral=True)


class EffectMenu(ByJob, discord.ui.DynamicItem[Select], template=r"kling:fxpick:(?P<job>\d+)"):
    def __init__(self, job_id: int, effects: Sequence[str] = (), cost: int = 0):
        menu: Select = discord.ui.Select(custom_id=f"kling:fxpick:{job_id}", placeholder=messages.POPULAR_EFFECTS,
                                         options=[discord.SelectOption(label=catalog.effect_title(name), value=name,
                                                                       description=messages.credits(cost))
                                                  for name in effects])
        super().__init__(menu)
        self.job_id = job_id

    async def callback(self, interaction: discord.Interaction) -> None:
        effect = self.item.values[0]
        if refusal := adapter_of(interaction).channel_refusal(interaction):
            await answer(interaction, refusal)
            return
        await interaction.response.edit_message(content=messages.effect_chosen(catalog.effect_title(effect)),
                                                view=None)
        await rerun(interaction, self.job_id, effect=effect)


class EffectByName(ByJob, discord.ui.DynamicItem[Button], template=r"kling:fxname:(?P<job>\d+)"):
    def __init__(self, job_id: int):
        super().__init__(discord.ui.Button(label=messages.TYPE_EFFECT_NAME, style=discord.ButtonStyle.secondary,
                                           custom_id=f"kling:fxname:{job_id}"))
        self.job_id = job_id

    async def callback(self, interaction: discord.Interaction) -> None:
        async def run(submitted: discord.Interaction, name: str) -> None:
            await rerun(submitted, self.job_id, effect=name)

        await interaction.response.send_modal(TextModal(messages.BUTTON_OTHER_EFFECT, messages.EFFECT_NAME,
                                                        messages.EFFECT_NAME_EXAMPLE, 100, run))


class WithPrompt(ByJob, discord.ui.DynamicItem[Button], template=r"kling:prompt:(?P<job>\d+)"):
    def __init__(self, job_id: int):
        super().__init__(discord.ui.Button(label=messages.BUTTON_PROMPT, style=discord.ButtonStyle.secondary,
                                           custom_id=f"kling:prompt:{job_id}"))
        self.job_id = job_id

    async def callback(self, interaction: discord.Interaction) -> None:
        if await refused(interaction, "animate", Params(prompt="-"), self.job_id):
            return

        async def run(submitted: discord.Interaction, prompt: str) -> None:
            await rerun(submitted, self.job_id, prompt=prompt)

        await interaction.response.send_modal(TextModal(messages.BUTTON_PROMPT, messages.OPTIONS["prompt"],
                                                        messages.PROMPT_EXAMPLE, catalog.PROMPT_MAX_CHARS, run))


def result_view(job_id: int) -> replies.Persistent:
    """The buttons under a delivered video of job ``job_id``."""
    return replies.Persistent(Again(job_id), OtherEffect(job_id), WithPrompt(job_id))


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    Again, OtherEffect, EffectMenu, EffectByName, WithPrompt)
