"""Payments (#18), as the engine offers them to adapters (``Engine`` inherits them): the
packs each platform sells and the /buy text, the pre-checkout verdict, a paid pack
credited once, a payment refunded once, and the out-of-credits answer that offers packs.

Which pack, how many credits and whether a payment may be refunded are decided here and
in the credit policy (``Credits.purchase``, ``Credits.take_back``); adapters only carry
the platform's events in and the answers out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from bot import messages
from bot.config import Pack, Settings
from bot.credits import Credits
from bot.engine.couriers import Couriers
from bot.jobs import Rejected, UserRef
from bot.payments import PLATFORMS, STARS, Credited, PaymentRefund, Purchase, payload_promise
from bot.store import Store, StoreOffline

log = logging.getLogger(__name__)

# Seconds between tries of a purchase's credit while the database is offline (a restart):
# about 5 minutes in all. Telegram sends a successful_payment once, so a credit given up
# is lost; the key makes a repeat (of a try whose commit was cut) write nothing.
PURCHASE_RETRY_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 60.0, 60.0, 60.0)


class Payments:
    """Packs, purchases and refunds (see ``bot.payments``)."""

    settings: Settings
    store: Store
    credits: Credits
    couriers: Couriers
    clock: Callable[[], float]

    def packs_for(self, platform: str) -> list[Pack]:
        """The packs sold on a platform (Telegram: those with a price in Stars; Discord: with an SKU)."""
        return self.settings.payments.sold_on(platform)

    def buy_text(self, platform: str) -> str:
        """/buy: each pack with its credits (and on Telegram its price in Stars; Discord's
        premium button shows its own price); a sentence saying none are sold when none are."""
        packs = self.packs_for(platform)
        if not packs:
            return messages.BUY_NOTHING
        return messages.buy_list([messages.buy_line(pack.name, pack.credits,
                                                    pack.stars if platform == "telegram" else None)
                                  for pack in packs])

    async def buy_offer(self, user: UserRef) -> tuple[str, list[Pack]]:
        """/buy for this user: the text and the packs to offer. A banned user is offered
        none (their checkout is refused, and credits they could not use would be money paid
        for nothing)."""
        if await self.store.ban_of(user.key) is not None:
            return messages.PAYMENT_BANNED, []
        return self.buy_text(user.platform), self.packs_for(user.platform)

    def out_of_credits_offer(self, platform: str) -> bool:
        """Whether an out-of-credits answer on this platform offers packs to buy."""
        return bool(self.packs_for(platform))

    def out_of_credits(self, platform: str, text: str) -> Rejected:
        """The refusal for too few credits (``text``), offering packs where the platform sells them."""
        if self.out_of_credits_offer(platform):
            return Rejected(messages.or_buy(text), offer_packs=True)
        return Rejected(text)

    async def check_purchase(self, user: UserRef, payload: str, currency: str, total: int) -> str | None:
        """The pre-checkout verdict on an invoice about to be paid: None when it may be;
        else why not, for the buyer. Writes nothing; reads only the buyer's ban."""
        promise = payload_promise(payload)
        if promise is None:
            return messages.PAYMENT_NOT_OURS
        credits, stars, name = promise
        pack = next((pack for pack in self.packs_for(user.platform) if pack.name == name), None)
        if pack is None:
            return messages.PACK_GONE
        if (pack.credits, pack.stars) != (credits, stars):
            return messages.PACK_CHANGED
        if currency != STARS:
            return messages.PAYMENT_WRONG_CURRENCY
        if total != stars:
            return messages.PAYMENT_WRONG_AMOUNT
        if await self.store.ban_of(user.key) is not None:
            return messages.PAYMENT_BANNED
        return None

    async def credit_purchase(self, purchase: Purchase) -> Credited:
        """Credit a paid pack once by its key, in one transaction with the ledger: a second
        call (here or in any process) writes nothing and says ``new=False``. While the
        database is offline it is tried again (``PURCHASE_RETRY_WAITS``), then StoreOffline."""
        for wait in (*PURCHASE_RETRY_WAITS, None):
            try:
                new, balance = await self.credits.purchase(purchase)
                break
            except StoreOffline as err:
                if wait is None:
                    log.error("payment %s (%s credits of %s to %s) NOT credited: the database stayed offline"
                              " (%s): grant the credits by hand or refund the charge",
                              purchase.key, purchase.credits, purchase.pack, purchase.user.key, err)
                    raise
                log.warning("payment %s not credited yet, the database is offline (%s): trying again in %s s",
                            purchase.key, err, wait)
                await asyncio.sleep(wait)
        if new:
            log.info("payment %s credited: %s credits of %s to %s", purchase.key, purchase.credits,
                     purchase.pack, purchase.user.key)
        return Credited(new, balance, messages.purchase_credited(purchase.pack, purchase.credits, balance.total))

    async def report_payment(self, text: str) -> None:
        """A payment that needs an admin (not credited, or not as its invoice said): logged
        and sent to the admins of every platform, so no charge is lost in a log alone."""
        log.error("%s", text)
        await self.couriers.alert_admins(text)

    async def refund_payment(self, key: str, *, by: str, user: UserRef | None = None) -> PaymentRefund:
        """Refund a payment once: its purchased credits still there are taken back, the
        rest (already spent) said as short, never below zero. ``by``: the admin's id, or
        "telegram"/"discord" for the platform's own refund (then the admins are told).
        ``user``: the buyer, when the platform's refund names them: a payment not credited
        yet then credits nothing when it arrives (a refund handled first, by another process)."""
        refund = await self.credits.take_back(key, by=by, user=user if by in PLATFORMS else None)
        platform_made = by in PLATFORMS
        if refund.outcome == "unknown":
            text = messages.refund_unknown_by_platform(key, by) if platform_made else messages.refund_unknown(key)
        elif refund.outcome == "already":
            text = messages.refund_already(key)
        else:
            assert refund.user_key is not None
            text = messages.refund_done(key, refund.user_key, refund.removed, refund.short - refund.held, by)
            if refund.held:
                text += " " + messages.refund_held(refund.held)
            log.info("payment %s refunded by %s: %s taken back, %s short", key, by, refund.removed, refund.short)
        refund = dataclasses.replace(refund, text=text)
        # The platform's refund of one already applied (an event delivered again) tells no one twice.
        if platform_made and refund.outcome != "already":
            await self.couriers.alert_admins(text)
        return refund

    async def payment(self, key: str) -> dict[str, Any] | None:
        """The payment with this key as stored; None: none."""
        return await self.store.payment(key)

    async def latest_payment(self, user: UserRef) -> dict[str, Any] | None:
        """The user's newest payment not refunded; None: none."""
        return await self.store.latest_payment(user.key)

    async def unconsumed_payments(self, platform: str) -> set[str]:
        """The keys of a platform's payments credited whose consumption the ledger has not noted."""
        return {str(payment["key"]) for payment in await self.store.payments_since(0)
                if payment["platform"] == platform and payment["consumed_at"] is None}

    async def mark_consumed(self, key: str) -> None:
        """Record that Discord was told the payment's entitlement is consumed."""
        await self.store.mark_consumed(key, self.clock())
