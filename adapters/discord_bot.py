"""The Discord bot: discord.py app commands that turn interactions into jobs.

Thin by design: refusals that need no download are answered ephemerally before
deferring (the engine's precheck), then the interaction is deferred, the
attachment read, and the request handed to the engine. Rules live in ``bot/``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Literal

import discord
import yarl
from discord import app_commands

from bot import catalog
from bot.catalog import Params
from bot.commands import effects_text
from bot.config import Settings
from bot.jobs import GenerationRequest, Rejected, UserRef
from bot.service import Engine
from adapters.discord_courier import TOKEN_LIFETIME, DiscordCourier

log = logging.getLogger(__name__)

PLATFORM = "discord"
MENU_SIZE = 24  # a select holds 25 options: 24 effects + "other…"

HELP = """I turn a photo into a short Kling AI video.
**/effect** scene image: one of the 77 effects (start typing to search).
**/animate** image prompt [model] [duration] [negative_prompt] [guidance] [end_image]
**/avatar** image audio [prompt]: the photo speaks the audio.
Right-click a message with a photo > Apps > **Animate with Kling** to pick an effect.
**/quota** your credits · **/jobs** your jobs · **/cancel** a queued job · **/effects** all effects"""


class DiscordAdapter:
    """Owns the discord.py client; ``start``/``stop`` run it next to the other adapters."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings.discord
        self.engine = engine
        # Slash commands need no privileged intent; guilds lets us see channel info.
        self.client = discord.Client(intents=discord.Intents(guilds=True))
        self.tree = app_commands.CommandTree(self.client)
        self.courier = DiscordCourier(self.client, self.settings)
        engine.register(PLATFORM, self.courier)
        self._add_commands()

    async def prepare(self) -> None:
        """Log in over REST and sync the commands (no gateway yet)."""
        # discord.py reads both addresses from class attributes: one bot per process.
        discord.http.Route.BASE = self.settings.api_base_url.rstrip("/")
        if self.settings.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.settings.gateway_url)
        await self.client.login(self.settings.token)
        if self.settings.guild_ids:
            for guild_id in self.settings.guild_ids:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    async def start(self) -> None:
        await self.prepare()
        gateway = self.client.loop.create_task(self.client.connect(), name="discord-gateway")
        gateway.add_done_callback(_log_gateway_end)
        self._gateway = gateway
        log.info("Discord bot %s is running", self.client.user)

    async def stop(self) -> None:
        await self.client.close()

    # --- commands -----------------------------------------------------------------

    def _add_commands(self) -> None:
        tree, adapter = self.tree, self

        @tree.command(name="effect", description="Animate a photo with one of the 77 Kling effects")
        @app_commands.describe(scene="The effect (start typing to search)", image="The photo")
        async def effect(interaction: discord.Interaction, scene: str, image: discord.Attachment):
            await adapter._generate(interaction, "effect", Params(effect=scene), image)

        @effect.autocomplete("scene")
        async def scene_choices(interaction: discord.Interaction, current: str):
            return [app_commands.Choice(name=name, value=name)
                    for name in catalog.search_effects(current, limit=25)]

        @tree.command(name="animate", description="Animate a photo from a prompt")
        @app_commands.describe(prompt="What should happen", model="Kling model (default v2.1)",
                               duration="Seconds", guidance="0-1: how closely to follow the prompt",
                               end_image="Last frame (master model only)")
        async def animate(interaction: discord.Interaction, image: discord.Attachment, prompt: str,
                          model: Literal["v1.6", "v2.1", "master"] | None = None,
                          duration: Literal[5, 10] | None = None,
                          negative_prompt: str | None = None,
                          guidance: app_commands.Range[float, 0.0, 1.0] | None = None,
                          end_image: discord.Attachment | None = None):
            params = Params(prompt=prompt, negative_prompt=negative_prompt, guidance=guidance,
                            duration=duration, has_end_image=end_image is not None)
            await adapter._generate(interaction, "animate", params, image, model=model, end_image=end_image)

        @tree.command(name="avatar", description="Make a photo speak an audio clip")
        async def avatar(interaction: discord.Interaction, image: discord.Attachment,
                         audio: discord.Attachment, prompt: str | None = None):
            await adapter._generate(interaction, "avatar", Params(prompt=prompt, has_audio=True),
                                    image, audio=audio)

        @tree.context_menu(name="Animate with Kling")
        async def animate_message(interaction: discord.Interaction, message: discord.Message):
            await adapter._effect_picker(interaction, message)

        @tree.command(name="quota", description="Your credits and when they reset")
        async def quota(interaction: discord.Interaction):
            await interaction.response.send_message(
                adapter.engine.balance(_user(interaction)).text(), ephemeral=True)

        @tree.command(name="jobs", description="Your jobs")
        async def jobs(interaction: discord.Interaction):
            lines = [f"Job {job.id} ({job.label}): {f'queued, position {pos}' if pos else job.state.value}"
                     for job, pos in adapter.engine.jobs_of(_user(interaction))]
            await interaction.response.send_message("\n".join(lines) or "You have no jobs running.",
                                                    ephemeral=True)

        @tree.command(name="cancel", description="Cancel a queued job of yours")
        async def cancel(interaction: discord.Interaction, job: int):
            text = await adapter.engine.cancel(_user(interaction), job)
            await interaction.response.send_message(text, ephemeral=True)

        @tree.command(name="effects", description="List the effects")
        async def effects(interaction: discord.Interaction):
            await interaction.response.send_message(effects_text(), ephemeral=True)

        @tree.command(name="help", description="How to use the bot")
        async def help_(interaction: discord.Interaction):
            await interaction.response.send_message(HELP, ephemeral=True)

        credits = app_commands.Group(name="credits", description="Manage credits (admins)",
                                     default_permissions=discord.Permissions(manage_guild=True),
                                     guild_only=True)

        @credits.command(name="grant", description="Give a member lasting extra credits")
        @app_commands.check(adapter._is_admin)
        async def grant(interaction: discord.Interaction, member: discord.User, amount: int):
            balance = adapter.engine.quota.grant(_user_of(member), amount, by=f"discord:{interaction.user.id}")
            await interaction.response.send_message(f"{member.mention} now has {balance.total} credits.",
                                                    ephemeral=True)

        @credits.command(name="set", description="Set how many credits a member has now")
        @app_commands.check(adapter._is_admin)
        async def set_(interaction: discord.Interaction, member: discord.User, amount: app_commands.Range[int, 0]):
            balance = adapter.engine.quota.set_credits(_user_of(member), amount, by=f"discord:{interaction.user.id}")
            await interaction.response.send_message(f"{member.mention} now has {balance.total} credits.",
                                                    ephemeral=True)

        tree.add_command(credits)

        @tree.command(name="usage", description="Today's videos and credits in this server (admins)")
        @app_commands.default_permissions(manage_guild=True)
        @app_commands.guild_only()
        @app_commands.check(adapter._is_admin)
        async def usage(interaction: discord.Interaction):
            since = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
            jobs, spent = adapter.engine.store.usage_since(PLATFORM, since.timestamp(), "guild_id",
                                                           interaction.guild_id)
            await interaction.response.send_message(
                f"Today (UTC) in this server: {jobs} job{'s' * (jobs != 1)}, {spent} credits spent.",
                ephemeral=True)

        @tree.error
        async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError):
            if isinstance(error, app_commands.CheckFailure):
                text = "Only server managers and the bot's admins can do that."
            else:
                log.error("command failed: %s: %s", type(error).__name__, error)
                text = "Sorry, something went wrong on my side."
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)

    def _is_admin(self, interaction: discord.Interaction) -> bool:
        # interaction.permissions is what Discord resolved for this member here; it
        # needs no cached guild roles (the bot asks for no member intents).
        return interaction.user.id in self.settings.admins or interaction.permissions.manage_guild

    # --- generation -----------------------------------------------------------------

    async def _generate(self, interaction: discord.Interaction, kind: catalog.Kind, params: Params,
                        image: discord.Attachment | str, *, model: str | None = None,
                        end_image: discord.Attachment | None = None,
                        audio: discord.Attachment | None = None, public: bool = False) -> None:
        """Check, defer, download, accept; the courier takes it from there."""
        user = _user(interaction)
        refusal = self._refusal(interaction) or self._attachment_refusal(image, "photo", "image/") \
            or self._attachment_refusal(end_image, "end image", "image/") \
            or self._attachment_refusal(audio, "audio", "audio/") \
            or self.engine.precheck(user, kind, model, params)
        if refusal:
            text = refusal.text if isinstance(refusal, Rejected) else refusal
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
            return
        if public:  # a component interaction: its own message is ephemeral, post a public one
            status = await interaction.followup.send("Checking the photo…", wait=True)
        else:
            await interaction.response.defer(thinking=True)
            status = await interaction.original_response()
        try:
            image_bytes = await self._read(image)
            end_bytes = await self._read(end_image) if end_image else None
            audio_bytes = await self._read(audio) if audio else None
        except discord.HTTPException:
            await self._refuse_after_defer(interaction, status, "I could not download the attachment. Try again?")
            return
        channel = interaction.channel
        request = GenerationRequest(user, kind, image_bytes, params, model=model, end_image=end_bytes,
                                    audio=audio_bytes, reply_to={
                                        "application_id": interaction.application_id,
                                        "token": interaction.token,
                                        "token_expires": time.time() + TOKEN_LIFETIME,
                                        "message_id": status.id, "channel_id": interaction.channel_id,
                                        "guild_id": interaction.guild_id, "user_id": interaction.user.id,
                                        "filesize_limit": interaction.filesize_limit,
                                        "nsfw_channel": bool(channel and getattr(channel, "nsfw", False))})
        answer = await self.engine.accept(request)
        if isinstance(answer, Rejected):
            await self._refuse_after_defer(interaction, status, answer.text)
            return
        await interaction.followup.edit_message(status.id, content=answer.text)

    async def _refuse_after_defer(self, interaction: discord.Interaction, status: discord.Message,
                                  text: str) -> None:
        # The deferred message is public; the refusal is for the user alone.
        await interaction.followup.delete_message(status.id)
        await interaction.followup.send(text, ephemeral=True)

    def _refusal(self, interaction: discord.Interaction) -> str | None:
        allowed = self.settings.allowed_channels
        if allowed and interaction.channel_id not in allowed:
            return "I don't make videos in this channel."
        return None

    def _attachment_refusal(self, attachment, what: str, kind: str) -> str | None:
        if attachment is None or isinstance(attachment, str):
            return None
        if not (attachment.content_type or "").startswith(kind):
            return f"The {what} must be {'a photo' if kind == 'image/' else 'an audio file'} " \
                   f"(got {attachment.content_type or 'an unknown file type'})."
        limit = self.engine.settings.media.max_download_mb * 1024 * 1024
        if attachment.size > limit:
            return f"The {what} is {attachment.size / 1048576:.1f} MB; the bot accepts up to " \
                   f"{self.engine.settings.media.max_download_mb:g} MB."
        return None

    async def _read(self, source: discord.Attachment | str) -> bytes:
        if isinstance(source, str):  # an embed image: Discord's media proxy URL
            return await self.client.http.get_from_cdn(source)
        return await source.read()

    async def _effect_picker(self, interaction: discord.Interaction, message: discord.Message) -> None:
        image = _image_in(message)
        if image is None:
            await interaction.response.send_message("That message has no image to animate.", ephemeral=True)
            return
        counts = self.engine.store.effect_counts()
        popular = sorted(catalog.EFFECTS, key=lambda e: -counts.get(e, 0))[:MENU_SIZE]
        view = EffectPicker(self, image, popular, owner=interaction.user.id)
        await interaction.response.send_message("Pick an effect for this image:", view=view, ephemeral=True)


class EffectPicker(discord.ui.View):
    """The ephemeral menu of the context-menu command: popular effects, or type any."""

    def __init__(self, adapter: DiscordAdapter, image, popular: list[str], owner: int):
        super().__init__(timeout=600)
        self.adapter, self.image, self.owner = adapter, image, owner
        self.choose.options = [discord.SelectOption(label=name, value=name) for name in popular]

    @discord.ui.select(placeholder="Popular effects", min_values=1, max_values=1)
    async def choose(self, interaction: discord.Interaction, select: discord.ui.Select):
        await self._run(interaction, select.values[0])

    @discord.ui.button(label="Another effect…", style=discord.ButtonStyle.secondary)
    async def other(self, interaction: discord.Interaction, button: discord.ui.Button):
        await interaction.response.send_modal(EffectNameModal(self))

    async def _run(self, interaction: discord.Interaction, effect: str) -> None:
        await interaction.response.edit_message(content=f"Effect {effect} chosen.", view=None)
        await self.adapter._generate(interaction, "effect", Params(effect=effect), self.image, public=True)


class EffectNameModal(discord.ui.Modal, title="Animate with Kling"):
    effect = discord.ui.TextInput(label="Effect name", placeholder="e.g. hula, jelly press, santa hug")

    def __init__(self, picker: EffectPicker):
        super().__init__()
        self.picker = picker

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.picker._run(interaction, str(self.effect.value))


def _log_gateway_end(task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the Discord gateway connection ended: %s: %s",
                  type(task.exception()).__name__, task.exception())


def _image_in(message: discord.Message) -> discord.Attachment | str | None:
    """The first image of a message: an attachment, else an embed's (via Discord's proxy)."""
    for attachment in message.attachments:
        if (attachment.content_type or "").startswith("image/"):
            return attachment
    for embed in message.embeds:
        for media in (embed.image, embed.thumbnail):
            if media and (media.proxy_url or media.url):
                return media.proxy_url or media.url
    return None


def _user(interaction: discord.Interaction) -> UserRef:
    return _user_of(interaction.user)


def _user_of(user: discord.abc.User) -> UserRef:
    return UserRef(PLATFORM, str(user.id), user.display_name)
