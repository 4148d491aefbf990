"""The Discord bot: a discord.py client whose app commands turn interactions into jobs.

Thin by design: refusals that need no download are answered ephemerally before
deferring (the engine's precheck), then the interaction is deferred, the
attachment read, and the request handed to the engine. Rules live in ``bot/``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import discord
from discord import app_commands

from adapters.chat import register
from adapters.discord import (
    commands,
    controls,
    figures,
    first_contact,
    forms,
    history,
    payments,
    picker,
    replies,
    results,
)
from adapters.discord.courier import DiscordCourier
from adapters.discord.delivery import point_at, quiet_voice, start_problem
from adapters.discord.kit import PLATFORM, Source, Targets, answer, carries, refusal_buttons, user_of
from adapters.downloads import read_capped
from bot import catalog, messages
from bot.catalog import Params, ValidationError
from bot.config import Settings
from bot.engine import Engine, place_key_of
from bot.jobs import GenerationRequest, Rejected

log = logging.getLogger(__name__)

INTENTS = discord.Intents(guilds=True, dm_messages=True, guild_messages=True)
FETCH_TIMEOUT = 120  # seconds to fetch an attachment or an embed image
FORMS = (*results.FORMS, *first_contact.FORMS, *picker.FORMS)
# A press naming one of these on a message that does not carry it is refused like an expired one.
FORGED_REFUSALS = (*((item, messages.SOURCE_GONE) for item in results.DYNAMIC_ITEMS),
                   *((item, messages.DISCORD_PHOTO_GONE) for item in (*first_contact.DYNAMIC_ITEMS,
                                                                       *picker.DYNAMIC_ITEMS)))


class Answering:
    """The gateway events the bot answers, the same whether its client holds one gateway
    connection or some shards of the bot's."""

    adapter: DiscordAdapter

    async def on_message(self, message: discord.Message) -> None:
        await first_contact.on_message(self.adapter, message)

    async def on_ready(self) -> None:
        """The first READY of the process looks for purchases made while the bot was down."""
        await self.adapter.purchases.scan()

    async def on_entitlement_create(self, entitlement: discord.Entitlement) -> None:
        await self.adapter.purchases.arrived(entitlement)

    async def on_entitlement_update(self, entitlement: discord.Entitlement) -> None:
        await self.adapter.purchases.updated(entitlement)

    async def on_entitlement_delete(self, entitlement: discord.Entitlement) -> None:
        await self.adapter.purchases.removed(entitlement)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Forms (modal submits) are answered here, by their custom ids (``forms``), and so
        are presses that name a button or menu the pressed message does not carry; then an
        unconsumed purchase the interaction carries is credited."""
        if not await forms.answer(interaction, FORMS):
            await refuse_forged(interaction)
        await self.adapter.purchases.carried(interaction)  # after the answers: they have 3 seconds


class KlingClient(Answering, discord.Client):
    """One gateway connection. The client knows its adapter, so commands and views reach it
    via ``interaction.client`` (``kit.adapter_of``)."""

    def __init__(self, adapter: DiscordAdapter):
        quiet_voice()
        # No privileged intent: guilds lets us see channel info; the message intents bring
        # direct messages and mentions of the bot with their content (a photo sent to it).
        super().__init__(intents=INTENTS)
        self.adapter = adapter


class ShardedKlingClient(Answering, discord.AutoShardedClient):
    """The shards ``shard_ids`` of ``shard_count`` (all of them when ``shard_ids`` is
    empty): Discord sends each shard the events of its servers, (guild id >> 22) % count,
    so several processes split the gateway. Commands and buttons arrive as interactions
    on the shard of their server, and are answered over REST, as without shards."""

    def __init__(self, adapter: DiscordAdapter, shard_count: int, shard_ids: list[int]):
        quiet_voice()
        super().__init__(intents=INTENTS, shard_count=shard_count, shard_ids=shard_ids or list(range(shard_count)))
        self.adapter = adapter


async def refuse_forged(interaction: discord.Interaction) -> None:
    """A press whose custom id names one of the bot's buttons or menus (``kling:again:42``)
    on a message that carries no such component: the custom id is the client's word, and
    discord.py leaves such a press unanswered ("This interaction failed"). Refused as if
    expired, revealing nothing."""
    if interaction.type is not discord.InteractionType.component:
        return
    data: dict[str, Any] = dict(interaction.data or {})
    custom_id = str(data.get("custom_id", ""))
    if carries(interaction.message, custom_id, int(data.get("component_type") or 0)):
        return  # the item itself answers it
    for item, refusal in FORGED_REFUSALS:
        if item.__discord_ui_compiled_template__.fullmatch(custom_id):
            await answer(interaction, refusal)
            return


class DiscordAdapter:
    """Owns the discord.py client; ``start``/``stop`` run it next to the other adapters."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings.discord
        self.media = settings.media
        self.engine = engine
        self.client: KlingClient | ShardedKlingClient = (
            ShardedKlingClient(self, self.settings.shard_count, self.settings.shard_ids)
            if self.settings.shard_count else KlingClient(self))
        self.tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(self.client)
        commands.install(self.tree, engine, history.history, *figures.COMMANDS, *controls.COMMANDS,
                         *payments.COMMANDS)
        # The buttons under videos and photo menus answer by their custom ids, also after a restart.
        self.client.add_dynamic_items(*results.DYNAMIC_ITEMS, *first_contact.DYNAMIC_ITEMS, *picker.DYNAMIC_ITEMS)
        self.targets = Targets()  # the images of open context menus
        self.courier = DiscordCourier(self.client, self.settings, engine)
        self.purchases = payments.Purchases(self.client, engine)  # the premium apps' entitlements
        register(engine, PLATFORM, self.courier)
        self._gateway: asyncio.Task[None] | None = None
        self._web: aiohttp.ClientSession | None = None  # for embed images, fetched by URL

    async def prepare(self) -> None:
        """Log in over REST and sync the commands (no gateway yet)."""
        point_at(self.settings)  # one bot per process: discord.py keeps the addresses in classes
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
        self._gateway = self.client.loop.create_task(self.client.connect(), name="discord-gateway")
        self._gateway.add_done_callback(_log_gateway_end)
        if self.settings.shard_count:
            log.info("Discord bot %s is running shards %s of %d", self.client.user,
                     self.settings.shard_ids or "all", self.settings.shard_count)
        else:
            log.info("Discord bot %s is running", self.client.user)

    def start_problem(self, error: Exception) -> str | None:
        return start_problem(error, self.settings)

    def ready(self) -> bool:
        """Connected to the gateway (``/readyz``): READY received, and every socket open (a
        reconnect in progress is not ready)."""
        client = self.client
        if client.is_closed() or not client.is_ready():
            return False
        if isinstance(client, discord.AutoShardedClient):
            return bool(client.shards) and all(not shard.is_closed() for shard in client.shards.values())
        return client.ws is not None and client.ws.open

    async def stop(self) -> None:
        self.purchases.stop()
        await self.client.close()
        if self._web is not None:
            await self._web.close()
            self._web = None

    # --- making a video -----------------------------------------------------------

    async def generate(self, interaction: discord.Interaction, kind: catalog.Kind, params: Params,
                       image: Source, *, model: str | None = None,
                       end_image: discord.Attachment | None = None,
                       audio: discord.Attachment | None = None) -> None:
        """Check, defer (or, when the interaction was answered already, post a public
        status message), download, accept; the courier takes it from there."""
        user = user_of(interaction.user)
        refusal = self.channel_refusal(interaction) \
            or self._attachment_refusal(image, "photo", wants_image=True) \
            or self._attachment_refusal(end_image, "end image", wants_image=True) \
            or self._attachment_refusal(audio, "audio", wants_image=False) \
            or await self.engine.precheck(user, kind, model, params,
                                    audio_seconds=audio.duration if audio is not None else None,
                                    place=place_key_of(PLATFORM, {"guild_id": interaction.guild_id,
                                                                  "user_id": interaction.user.id}))
        if refusal:
            await answer(interaction, refusal.text if isinstance(refusal, Rejected) else refusal,
                         view=refusal_buttons(self.engine, refusal))
            return
        status = await replies.open_status(interaction)
        try:
            image_bytes = await self._read(image, "photo")
            end_bytes = await self._read(end_image, "end image") if end_image else None
            audio_bytes = await self._read(audio, "audio") if audio else None
        except ValidationError as err:  # a file served over [media] max_download_mb
            await replies.refuse(interaction, status, str(err))
            return
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError):
            await replies.refuse(interaction, status, messages.ATTACHMENT_DOWNLOAD_FAILED)
            return
        request = GenerationRequest(user, kind, image_bytes, params, model=model, end_image=end_bytes,
                                    audio=audio_bytes, reply_to=replies.reply_to(interaction, status.id))
        accepted = await self.engine.accept(request)
        if isinstance(accepted, Rejected):
            await replies.refuse(interaction, status, accepted.text, refusal_buttons(self.engine, accepted))
            return
        await interaction.followup.edit_message(status.id, content=accepted.text)

    def channel_refusal(self, interaction: discord.Interaction, source: int | str | None = None) -> str | None:
        """The refusal for a channel outside ``[discord] allowed_channels``: the one the
        interaction happened in, or ``source``, the one its photo comes from (a job's, a
        menu's message's); None when both are inside."""
        allowed = {str(channel) for channel in self.settings.allowed_channels}
        if allowed and str(interaction.channel_id) not in allowed:
            return messages.CHANNEL_NOT_ALLOWED
        if allowed and source and str(source) not in allowed:
            return messages.SOURCE_CHANNEL_NOT_ALLOWED
        return None

    def _attachment_refusal(self, attachment: Source | None, what: str, *,
                            wants_image: bool) -> str | None:
        if attachment is None or isinstance(attachment, str):
            return None
        if not (attachment.content_type or "").startswith("image/" if wants_image else "audio/"):
            return messages.attachment_wrong_type(what, wants_image, attachment.content_type)
        if attachment.size > self.media.max_download_bytes:
            return messages.attachment_too_large(what, attachment.size, self.media.max_download_mb)
        return None

    async def _read(self, source: Source, what: str) -> bytes:
        """An attachment's or an embed image's bytes, read in chunks and refused as soon as
        they pass ``[media] max_download_mb``: an attachment's size was checked before
        deferring, but what the CDN serves is whatever the far end sends."""
        url = source if isinstance(source, str) else source.url  # an embed image: Discord's media proxy URL
        if self._web is None:
            self._web = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT))
        return await read_capped(self._web, url, what, self.media.max_download_bytes)

    async def effect_picker(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The context menu: a private menu of popular effects for a message's image."""
        await picker.open_menu(self, interaction, message)


def _log_gateway_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the Discord gateway connection ended: %s: %s",
                  type(task.exception()).__name__, task.exception())
