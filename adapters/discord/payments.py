"""Discord's premium apps: /buy, /refund, and the entitlements of the packs' consumable SKUs.

A purchase in the app's store arrives as ENTITLEMENT_CREATE (and among the buyer's
entitlements on their interactions while it is unconsumed). The engine credits it once
per entitlement (the ledger's unique key), then the bot consumes it at Discord (a user
holds one unconsumed entitlement of a consumable SKU at a time: until it is consumed they
cannot buy that pack again), then the ledger notes it consumed. A consume that fails is
tried again at the next start: the first READY of a process lists the entitlements not
ended and handles each unconsumed one of a pack's SKU the same way (crediting again
writes nothing). Discord's own refunds arrive as ENTITLEMENT_DELETE and take the credits
back once. Which pack, how many credits, what a refund can take back: the engine says.

Only a user's one-time entitlement is a pack bought: not a server's, not a deleted or
ended one, not a subscription's (an SKU an operator made a pack's by mistake). The store's
test mode (TEST_MODE_PURCHASE, a developer trying the packs) is credited like a purchase;
the ledger keeps the entitlement's type. ENTITLEMENT_UPDATE is taken as what it shows: an
unconsumed pack entitlement is the purchase (credited once), a deleted one its refund. A
start scan that fails is tried again after ``retry_delay`` (doubling), not only at the next
READY, which may be hours away.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import discord
from discord import app_commands

from adapters.discord.commands import is_admin
from adapters.discord.kit import PLATFORM, adapter_of, answer, buy_buttons, user_of
from bot import messages
from bot.config import Pack
from bot.engine import Engine
from bot.jobs import UserRef
from bot.payments import Purchase, discord_key

log = logging.getLogger(__name__)

REMOTE_ERRORS = (discord.HTTPException, aiohttp.ClientError, TimeoutError)
# A subscription's entitlements: never a consumable pack bought (nor can they be consumed).
SUBSCRIPTIONS = (discord.EntitlementType.application_subscription, discord.EntitlementType.premium_subscription)
SCAN_RETRY_DELAY = 30.0  # seconds before a failed start scan is tried again (doubling)
SCAN_RETRY_MAX = 15 * 60.0
MAX_SNOWFLAKE_DIGITS = 20  # a snowflake is a 64-bit number


class Purchases:
    """The entitlements of one process's client: credited, consumed, refunded."""

    def __init__(self, client: discord.Client, engine: Engine):
        self.client = client
        self.engine = engine
        self.scanned = False  # the start scan ran (once per process; again after a failed one)
        self.retry_delay = SCAN_RETRY_DELAY
        self._retry: asyncio.Task[None] | None = None

    def pack_of(self, entitlement: discord.Entitlement) -> Pack | None:
        """The pack sold by the entitlement's SKU, if one is."""
        return next((pack for pack in self.engine.packs_for(PLATFORM)
                     if pack.discord_sku == str(entitlement.sku_id)), None)

    def bought(self, entitlement: discord.Entitlement) -> Pack | None:
        """The pack a user bought with this entitlement; None: it is no pack bought (another
        SKU's, a server's, deleted, ended, a subscription's)."""
        pack = self.pack_of(entitlement)
        if pack is None or entitlement.user_id is None or entitlement.deleted or entitlement.is_expired():
            return None
        if entitlement.type in SUBSCRIPTIONS:
            log.warning("entitlement %s: a subscription's, of the SKU of pack %r (a pack's SKU must be a"
                        " consumable): not credited", entitlement.id, pack.name)
            return None
        return pack

    async def arrived(self, entitlement: discord.Entitlement) -> None:
        """A user's entitlement of a pack's SKU: credit it (once), consume it, note it consumed."""
        pack = self.bought(entitlement)
        if pack is None or entitlement.user_id is None:
            return  # not a pack bought: not the bot's to credit
        key = discord_key(entitlement.id)
        credited = await self.engine.credit_purchase(Purchase(
            key, UserRef(PLATFORM, str(entitlement.user_id)), pack.name, pack.credits,
            sku_id=str(entitlement.sku_id), details={"entitlement_type": entitlement.type.value}))
        if await self._consume(entitlement):
            await self.engine.mark_consumed(key)
        if credited.new:
            await self._tell_buyer(entitlement.user_id, credited.text)

    async def carried(self, interaction: discord.Interaction) -> None:
        """An interaction carries the user's entitlements: an unconsumed one of a pack's SKU
        is a purchase whose event went astray (or is still under way): the same as it."""
        for entitlement in interaction.entitlements:
            if not entitlement.consumed:
                await self.arrived(entitlement)

    async def updated(self, entitlement: discord.Entitlement) -> None:
        """ENTITLEMENT_UPDATE: a deleted pack entitlement is a refund; an unconsumed one the
        purchase (credited once, whichever event or process sees it first)."""
        if entitlement.deleted:
            await self.removed(entitlement)
        elif not entitlement.consumed:
            await self.arrived(entitlement)

    async def removed(self, entitlement: discord.Entitlement) -> None:
        """Discord refunded (deleted) an entitlement: the engine takes back its credits once
        and tells the admins."""
        key = discord_key(entitlement.id)
        not_ours = (self.pack_of(entitlement) is None or entitlement.user_id is None
                    or entitlement.type in SUBSCRIPTIONS)
        if not_ours and await self.engine.payment(key) is None:
            return  # another SKU's, a server's (or a pack's no longer sold), never credited: not the bot's
        # The buyer, when the event names one: a refund handled before its purchase (events
        # out of order, or at two processes) leaves a row that the purchase then credits not.
        user = None if entitlement.user_id is None else UserRef(PLATFORM, str(entitlement.user_id))
        await self.engine.refund_payment(key, by=PLATFORM, user=user)

    async def scan(self) -> None:
        """At the first READY of a process: the purchases made while the bot was down, and
        those credited but not yet consumed."""
        if self.scanned:
            return
        skus = [discord.Object(int(pack.discord_sku)) for pack in self.engine.packs_for(PLATFORM)]
        if not skus:
            self.scanned = True
            return
        try:
            found = [entitlement async for entitlement in self.client.entitlements(
                limit=None, skus=skus, exclude_ended=True)]
        except REMOTE_ERRORS as err:
            log.warning("could not list the entitlements at start (%s); tried again in %.1f s",
                        err, self.retry_delay)
            self._scan_later()
            return
        self.scanned = True
        self.retry_delay = SCAN_RETRY_DELAY
        # Consumed at Discord, not yet in the ledger: a process stopped between the two.
        unnoted = await self.engine.unconsumed_payments(PLATFORM)
        for entitlement in found:
            if not entitlement.consumed:
                await self.arrived(entitlement)
            elif discord_key(entitlement.id) in unnoted:
                await self.engine.mark_consumed(discord_key(entitlement.id))

    def _scan_later(self) -> None:
        if self._retry is not None and not self._retry.done():
            return
        delay, self.retry_delay = self.retry_delay, min(self.retry_delay * 2, SCAN_RETRY_MAX)

        async def later() -> None:
            await asyncio.sleep(delay)
            self._retry = None  # this one is done waiting: a failed scan now schedules the next
            if not self.client.is_closed():
                await self.scan()

        self._retry = asyncio.create_task(later(), name="discord-entitlement-scan-retry")

    def stop(self) -> None:
        """The process ends: a scan waiting to be tried again is not."""
        if self._retry is not None:
            self._retry.cancel()

    async def _consume(self, entitlement: discord.Entitlement) -> bool:
        """Consume it at Discord; True once it is consumed (also when it already was)."""
        try:
            await entitlement.consume()
            return True
        except discord.NotFound:
            log.warning("entitlement %s: Discord knows it no more (deleted), not consumed", entitlement.id)
            return False
        except REMOTE_ERRORS as err:
            if isinstance(err, discord.HTTPException) and err.status < 500 and await self._consumed(entitlement):
                return True  # consumed before (an event delivered twice, another process, the start scan)
            log.warning("entitlement %s: not consumed at Discord (%s); tried again at the next start",
                        entitlement.id, err)
            return False

    async def _consumed(self, entitlement: discord.Entitlement) -> bool:
        """Whether Discord shows the entitlement consumed: it documents no answer for consuming
        one twice, so the bot asks rather than reads an error."""
        try:
            return (await self.client.fetch_entitlement(entitlement.id)).consumed
        except REMOTE_ERRORS:
            return False

    async def _tell_buyer(self, user_id: int, text: str) -> None:
        """Best effort: the buyer's DMs may be closed; the credits are theirs either way."""
        try:
            channel = await self.client.create_dm(discord.Object(user_id))
            await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        except REMOTE_ERRORS as err:
            log.info("could not tell user %s of their purchase (%s)", user_id, err)


@app_commands.command(name="buy", description=messages.COMMANDS["buy"])
async def buy(interaction: discord.Interaction) -> None:
    text, packs = await adapter_of(interaction).engine.buy_offer(user_of(interaction.user))
    await answer(interaction, text, view=buy_buttons(packs))


@app_commands.command(name="refund", description=messages.COMMANDS["refund"])
@app_commands.describe(payment=messages.OPTIONS["refund payment"], user=messages.OPTIONS["refund user"])
@app_commands.default_permissions(manage_guild=True)
@app_commands.check(is_admin)
async def refund(interaction: discord.Interaction, payment: str | None = None,
                 user: discord.User | None = None) -> None:
    engine = adapter_of(interaction).engine
    key, refusal = await _named_payment(engine, payment, user)
    if key is None:
        await answer(interaction, refusal)
        return
    refunded = await engine.refund_payment(key, by=str(interaction.user.id))
    # Who returns the money, after a refund made now (not after "unknown" or "refunded before")
    await answer(interaction, messages.discord_refund_reply(refunded.text) if refunded.outcome == "refunded"
                 else refunded.text)


async def _named_payment(engine: Engine, payment: str | None,
                         user: discord.User | None) -> tuple[str | None, str]:
    """The ledger key of the payment an admin named (an entitlement id, or a member's latest
    payment), or None and the sentence saying why none is."""
    if payment is not None:
        entitlement_id = payment.strip().removeprefix(f"{PLATFORM}:")
        # a snowflake: ASCII digits (str.isdigit takes "²" and "١" too), at most 20 of them
        if entitlement_id.isascii() and entitlement_id.isdigit() and len(entitlement_id) <= MAX_SNOWFLAKE_DIGITS:
            return discord_key(entitlement_id), ""
        return None, messages.DISCORD_PAYMENT_ID_INVALID
    if user is not None:
        latest: dict[str, Any] | None = await engine.latest_payment(user_of(user))
        if latest is not None:
            return str(latest["key"]), ""
        return None, messages.no_payment_to_refund(user.mention)
    return None, messages.DISCORD_REFUND_WHICH


COMMANDS: tuple[app_commands.Command[Any, ..., Any], ...] = (buy, refund)
