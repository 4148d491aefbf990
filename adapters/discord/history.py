"""/history: a user's recent videos, and one of them posted again with its buttons.

The video is fetched again from WaveSpeed (it keeps outputs 7 days) and shown by the
courier's shared rules: the NSFW policy, re-encoded to this interaction's upload limit
when too big, and the result buttons under it. The fetched file is deleted after.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

import discord
from discord import app_commands

from adapters.discord import replies
from adapters.discord.kit import AUTOCOMPLETE_LIMIT, adapter_of, answer, user_of
from bot import messages
from bot.jobs import DeliveryRefused, Job, JobState, Press, Rejected

log = logging.getLogger(__name__)

LOOKBACK = 100  # a user's ended jobs searched for the one they name


@app_commands.command(name="history", description=messages.COMMANDS["history"])
@app_commands.describe(job=messages.HISTORY_OPTION)
async def history(interaction: discord.Interaction, job: int | None = None) -> None:
    adapter = adapter_of(interaction)
    if job is None:
        await answer(interaction, messages.history_list([
            (past.id, past.label, past.state.value, datetime.fromtimestamp(past.finished_at or past.created_at, UTC))
            for past in postable(interaction, await adapter.engine.history(user_of(interaction.user)))]))
        return
    if refusal := adapter.channel_refusal(interaction):
        await answer(interaction, refusal)
        return
    past = await adapter.engine.job_to_post_again(asker(interaction), job, private=interaction.guild_id is None)
    if past is None:
        await answer(interaction, messages.no_such_job(job))
        return
    await repost(interaction, past)


def asker(interaction: discord.Interaction) -> Press:
    """Who asks /history, in which channel: Discord vouches for both."""
    return Press.from_chat(user_of(interaction.user), str(interaction.channel_id or ""))


def postable(interaction: discord.Interaction, jobs: list[Job]) -> list[Job]:
    """The jobs /history may post again where it is asked (``Press.may_post_again``): in a
    direct message any of the user's own, in a server channel only one made there (a direct
    message's prompt stays private). The list and the choices offer no others."""
    press = asker(interaction)
    return [job for job in jobs if press.may_post_again(job, private=interaction.guild_id is None)]


async def repost(interaction: discord.Interaction, past: Job) -> None:
    adapter = adapter_of(interaction)
    status = await replies.open_status(interaction)
    # Edited before the video goes out: Discord would make a first followup the deferred reply.
    await interaction.followup.edit_message(status.id, content=messages.job_status(
        past.id, past.label, messages.progress("downloading")))
    video = await adapter.engine.fetch_video(user_of(interaction.user), past.id)
    if isinstance(video, Rejected):
        await replies.refuse(interaction, status, video.text)
        return
    try:
        await adapter.courier.show(replace(past, reply_to=replies.reply_to(interaction, status.id)), video)
    except (discord.HTTPException, DeliveryRefused) as err:
        log.warning("job %s: could not post it again (%s)", past.id, err)
        await interaction.followup.edit_message(status.id, content=messages.job_failed(past.id, messages.NOT_POSTED))
        return
    finally:
        video.path.unlink(missing_ok=True)
    await interaction.followup.delete_message(status.id)  # the video (with its caption) says it all


@history.autocomplete("job")
async def job_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[int]]:
    wanted = current.strip().lower()
    past = await adapter_of(interaction).engine.history(user_of(interaction.user), LOOKBACK)
    done = [p for p in postable(interaction, past) if p.state == JobState.DONE]
    return [app_commands.Choice(name=messages.history_choice(p.id, p.label), value=p.id) for p in done
            if not wanted or wanted in str(p.id) or wanted in p.label.lower()][:AUTOCOMPLETE_LIMIT]
