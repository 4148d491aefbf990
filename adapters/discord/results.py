"""The buttons under every delivered video: again, another effect, animate with a prompt.

Each is a ``Keyed`` item (``adapters.discord.items``): its custom id carries the job
(``kling:again:42``), so the client answers it by that id alone, also after a restart,
with nothing kept in memory; the forms they open are answered by their custom ids too
(``adapters.discord.forms``).
Whoever presses is charged; the allow list and the engine's checks apply as to any
request, and refusals are private and come before anything public (or a menu's
change): only a refusal that needs the photo comes after the "thinking…" message.
The new job shows in a new public message.
"""

from __future__ import annotations

from typing import Any

import discord

from adapters.discord import forms, replies
from adapters.discord.items import MENU_SIZE, ByJob, EffectsMenu, KeyedButton
from adapters.discord.kit import adapter_of, answer_refusal, press_of, user_of
from bot import catalog, messages
from bot.catalog import Params
from bot.jobs import Press, Rejected


async def rerun(interaction: discord.Interaction, job_id: int, *, effect: str | None = None,
                prompt: str | None = None, press: Press | None = None) -> None:
    """A new job from a delivered one, charged to whoever pressed, shown in a new message;
    refused privately first when it could not start anyway."""
    press = press or press_of(interaction)
    if refusal := await refusal_of(interaction, job_id, effect=effect, prompt=prompt, press=press):
        await answer_refusal(interaction, refusal)
        return
    await start(interaction, job_id, effect=effect, prompt=prompt, press=press)


async def start(interaction: discord.Interaction, job_id: int, *, effect: str | None = None,
                prompt: str | None = None, press: Press | None = None) -> None:
    """The public status message, and the engine's answer in it (or a private refusal)."""
    engine = adapter_of(interaction).engine
    press = press or press_of(interaction)
    await replies.start_job(interaction, lambda reply_to: engine.rerun(
        press, job_id, reply_to=reply_to, effect=effect, prompt=prompt))


async def refusal_of(interaction: discord.Interaction, job_id: int, *, effect: str | None = None,
               prompt: str | None = None, press: Press | None = None) -> Rejected | str | None:
    """Why the presser could not start such a job from job ``job_id`` (the channel pressed
    in or the job's photo's channel outside the allow list, then the engine's
    ``rerun_precheck``: its photo no longer kept or not the presser's to use, the effect or
    prompt, too many jobs, credits), known before any download; None when the engine may try."""
    adapter = adapter_of(interaction)
    press = press or press_of(interaction)
    if refusal := adapter.channel_refusal(interaction, await adapter.engine.source_place(press, job_id)):
        return refusal
    return await adapter.engine.rerun_precheck(press, job_id, effect=effect, prompt=prompt)


class Again(ByJob, KeyedButton):
    what, label, style = "again", messages.BUTTON_AGAIN, discord.ButtonStyle.primary

    async def callback(self, interaction: discord.Interaction) -> None:
        await rerun(interaction, self.job_id)


class OtherEffect(ByJob, KeyedButton):
    """Opens a private menu of popular effects (readable names, costs) for the same photo."""

    what, label = "fx", messages.BUTTON_OTHER_EFFECT

    async def callback(self, interaction: discord.Interaction) -> None:
        if refusal := await refusal_of(interaction, self.job_id, effect=catalog.EFFECTS[0]):
            await answer_refusal(interaction, refusal)
            return
        engine = adapter_of(interaction).engine
        cost = engine.quote("effect", None, Params(effect=catalog.EFFECTS[0]))
        have = (await engine.balance(user_of(interaction.user))).total
        view = replies.Persistent(EffectMenu(self.job_id, effects=(await engine.popular_effects())[:MENU_SIZE],
                                             cost=cost),
                                  EffectByName(self.job_id))
        await interaction.response.send_message(messages.pick_effect_priced(cost, have), view=view, ephemeral=True)


class EffectMenu(ByJob, EffectsMenu):
    what = "fxpick"

    async def callback(self, interaction: discord.Interaction) -> None:
        effect = self.item.values[0]
        if refusal := await refusal_of(interaction, self.job_id, effect=effect):
            await answer_refusal(interaction, refusal)  # the menu stays, for another pick
            return
        await interaction.response.edit_message(content=messages.effect_chosen(catalog.effect_title(effect)),
                                                view=None)
        await start(interaction, self.job_id, effect=effect)


class EffectByName(ByJob, KeyedButton):
    what, label = "fxname", messages.TYPE_EFFECT_NAME

    async def callback(self, interaction: discord.Interaction) -> None:
        if refusal := await refusal_of(interaction, self.job_id, effect=catalog.EFFECTS[0]):
            await answer_refusal(interaction, refusal)
            return
        await EFFECT_FORM.open(interaction, self.job_id)


class WithPrompt(ByJob, KeyedButton):
    what, label = "prompt", messages.BUTTON_PROMPT

    async def callback(self, interaction: discord.Interaction) -> None:
        if refusal := await refusal_of(interaction, self.job_id, prompt="-"):
            await answer_refusal(interaction, refusal)
            return
        await PROMPT_FORM.open(interaction, self.job_id)


def form_press(interaction: discord.Interaction) -> Press:
    """A form about a job acts only on a job of the channel where it is submitted (or the
    submitter's own): its custom id is the client's word, the channel Discord's."""
    return Press.from_chat(user_of(interaction.user), str(interaction.channel_id or ""))


async def _effect_typed(interaction: discord.Interaction, ids: tuple[int, ...], name: str) -> None:
    await rerun(interaction, ids[0], effect=name, press=form_press(interaction))


async def _prompt_typed(interaction: discord.Interaction, ids: tuple[int, ...], prompt: str) -> None:
    await rerun(interaction, ids[0], prompt=prompt, press=form_press(interaction))


EFFECT_FORM = forms.Form("kling:fxform", ("job",), messages.BUTTON_OTHER_EFFECT, messages.EFFECT_NAME,
                         messages.EFFECT_NAME_EXAMPLE, forms.NAME_LENGTH, _effect_typed)
PROMPT_FORM = forms.Form("kling:promptform", ("job",), messages.BUTTON_PROMPT, messages.OPTIONS["prompt"],
                         messages.PROMPT_EXAMPLE, catalog.PROMPT_MAX_CHARS, _prompt_typed)


def result_view(job_id: int) -> replies.Persistent:
    """The buttons under a delivered video of job ``job_id``."""
    return replies.Persistent(Again(job_id), OtherEffect(job_id), WithPrompt(job_id))


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    Again, OtherEffect, EffectMenu, EffectByName, WithPrompt)
FORMS = (EFFECT_FORM, PROMPT_FORM)
