"""What the Discord adapter's commands and views share, and how they reach the adapter.

A leaf: it imports no other module of this package. The adapter (``bot.py``) imports
its commands and views, they import this module (and ``forms``, ``replies``, ``items``),
and nothing imports back up. A command or view reaches the adapter that runs it as
``adapter_of(interaction)``, typed as ``Adapter``: the little of it they may use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import discord

from adapters.chat import ChatCourier
from bot import catalog
from bot.catalog import Params
from bot.config import DiscordSettings, Pack
from bot.engine import Engine
from bot.jobs import Press, Rejected, UserRef

PLATFORM = "discord"
AUTOCOMPLETE_LIMIT = 25  # Discord shows at most 25 choices
CONTENT_LIMIT = 2000  # characters of a message
KEPT = 15 * 60  # seconds a context menu's image is remembered (as long as its interaction token lives)
MAX_BUTTONS = 25  # five action rows of five

Source = discord.Attachment | str  # an attachment, or an embed image's proxy URL


class Targets:
    """The images context menus were opened for, by (channel, message), for ``KEPT`` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._images: dict[tuple[int, int], tuple[float, Source]] = {}

    def remember(self, channel_id: int, message_id: int, image: Source) -> None:
        now = self.clock()
        self._images = {key: kept for key, kept in self._images.items() if now - kept[0] < KEPT}
        self._images[(channel_id, message_id)] = (now, image)

    def recall(self, channel_id: int, message_id: int) -> Source | None:
        kept = self._images.get((channel_id, message_id))
        return kept[1] if kept is not None and self.clock() - kept[0] < KEPT else None


class Adapter(Protocol):
    """What commands and views use of the adapter that runs them (``bot.DiscordAdapter``)."""

    @property
    def settings(self) -> DiscordSettings: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def client(self) -> discord.Client: ...

    @property
    def courier(self) -> ChatCourier: ...

    @property
    def targets(self) -> Targets: ...

    async def generate(self, interaction: discord.Interaction, kind: catalog.Kind, params: Params,
                       image: Source, *, model: str | None = None,
                       end_image: discord.Attachment | None = None,
                       audio: discord.Attachment | None = None) -> None: ...

    def channel_refusal(self, interaction: discord.Interaction,
                        source: int | str | None = None) -> str | None: ...

    async def effect_picker(self, interaction: discord.Interaction, message: discord.Message) -> None: ...


def adapter_of(interaction: discord.Interaction) -> Adapter:
    """The adapter whose client received ``interaction`` (its client carries it as ``adapter``)."""
    return interaction.client.adapter  # type: ignore[attr-defined, no-any-return]


def user_of(user: discord.abc.User) -> UserRef:
    """Who, with their role ids here when Discord sent them as a server member (for
    ``[discord.roles]``): the ids the interaction carries, so no cached guild is needed."""
    roles = tuple(str(role) for role in getattr(user, "_roles", ()))  # Member.roles needs the guild's cache
    return UserRef(PLATFORM, str(user.id), user.display_name, roles=roles)


def press_of(interaction: discord.Interaction, custom_id: str | None = None) -> Press:
    """Who pressed, in which channel, and whether the pressed message (as Discord sent it)
    carries a component with ``custom_id`` (by default the one pressed): a custom id alone
    is the client's word."""
    data: dict[str, Any] = dict(interaction.data or {})
    wanted = custom_id or str(data.get("custom_id", ""))
    return Press.of_button(user_of(interaction.user), str(interaction.channel_id or ""),
                           carried=carries(interaction.message, wanted))


def carries(message: discord.Message | None, custom_id: str, component_type: int | None = None) -> bool:
    """Whether ``message`` (as Discord sent it) holds a component with ``custom_id`` (and,
    when given, of that type)."""
    return message is not None and any(
        getattr(child, "custom_id", None) == custom_id
        and (component_type is None or int(getattr(child, "type", 0)) == component_type)
        for row in message.components for child in getattr(row, "children", [row]))


async def answer(interaction: discord.Interaction, text: str, *, view: discord.ui.View | None = None) -> None:
    """An ephemeral answer, whether or not the interaction was answered before (cut to
    Discord's length limit: a refusal may quote what the user typed), with ``view``'s buttons."""
    text = fit(text)
    extra: dict[str, Any] = {"view": view} if view is not None else {}
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True, **extra)
    else:
        await interaction.response.send_message(text, ephemeral=True, **extra)


def buy_buttons(packs: Sequence[Pack]) -> discord.ui.View | None:
    """One premium button per pack with a Discord SKU: Discord shows the SKU's name and
    price on it and opens the purchase. None when no pack is sold on Discord."""
    skus = [int(pack.discord_sku) for pack in packs if pack.discord_sku][:MAX_BUTTONS]
    if not skus:
        return None
    view = discord.ui.View(timeout=None)  # premium buttons send the bot no interaction
    for sku in skus:
        view.add_item(discord.ui.Button(style=discord.ButtonStyle.premium, sku_id=sku))
    return view


async def answer_refusal(interaction: discord.Interaction, refusal: Rejected | str) -> None:
    """A refusal, privately: an out-of-credits one with the buy buttons."""
    text = refusal.text if isinstance(refusal, Rejected) else refusal
    await answer(interaction, text, view=refusal_buttons(adapter_of(interaction).engine, refusal))


def refusal_buttons(engine: Engine, refusal: Rejected | str) -> discord.ui.View | None:
    """The buy buttons an out-of-credits refusal carries (the engine says when: ``offer_packs``)."""
    if isinstance(refusal, Rejected) and refusal.offer_packs:
        return buy_buttons(engine.packs_for(PLATFORM))
    return None


def fit(text: str) -> str:
    """``text`` cut to what a Discord message may hold."""
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT - 1] + "…"


def own_channel(interaction: discord.Interaction, channel_id: int) -> bool:
    """Whether a custom id's channel is the one the interaction happened in: the only
    channel whose messages a menu, button or form may use (the user is there; the custom
    id may name any channel, also one they cannot see)."""
    return interaction.channel_id is not None and channel_id == interaction.channel_id


async def photo_message(interaction: discord.Interaction, channel_id: int, message_id: int) -> discord.Message | None:
    """The message a menu was made for, read again (attachment URLs expire) through its
    channel: one Discord does not show the bot there is None."""
    try:
        return await interaction.client.get_partial_messageable(channel_id).fetch_message(message_id)
    except discord.HTTPException:
        return None


def image_in(message: discord.Message) -> Source | None:
    """The first image of a message: an attachment, else an embed's through Discord's media
    proxy (never the embed's own URL: the bot must not fetch whatever host a user names)."""
    for attachment in message.attachments:
        if (attachment.content_type or "").startswith("image/"):
            return attachment
    for embed in message.embeds:
        for media in (embed.image, embed.thumbnail):
            if media and media.proxy_url:
                return media.proxy_url
    return None
