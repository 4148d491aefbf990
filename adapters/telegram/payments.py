"""Telegram Stars: /buy, /paysupport, /refund (admins) and the payment updates.

Thin: which packs are sold, what they cost, whether a checkout may go ahead, what a
payment credits and what a refund takes back are the engine's (``bot/engine/payments.py``).
Here: invoice links (``createInvoiceLink``, one per pack, made once per process), the
pre-checkout query answered in its own handler (Telegram waits 10 seconds; the app runs
updates concurrently, so no job's download holds it up), a ``successful_payment`` handed
to the engine under its charge id (credited once however often it arrives, in whichever
process), a ``refunded_payment`` (a refund made outside the bot) applied once, and
``refundStarPayment`` for an admin's /refund. Each such update comes once: a payment or
refund the bot could not write (tried again first) or could not read is told to the admins
(and a payment to its buyer), never left in a log alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LabeledPrice, Update
from telegram.error import TelegramError
from telegram.ext import Application, BaseHandler, ContextTypes, MessageHandler, PreCheckoutQueryHandler, filters

from adapters.telegram.common import PLATFORM, args_of, message_of, sender, user_ref
from bot import messages
from bot.config import Pack, PaymentsSettings, TelegramSettings
from bot.engine import Engine, StoreOffline
from bot.payments import STARS, Credited, Purchase, invoice_payload, payload_promise, telegram_key

log = logging.getLogger(__name__)

# refundStarPayment's answer for a charge refunded before ("Bad Request: CHARGE_ALREADY_REFUNDED";
# PTB's error message drops the prefix and capitalizes it: compared without case).
ALREADY_REFUNDED = "charge_already_refunded"
WRITE_RETRIES = (0.5, 1.0, 2.0)  # seconds between tries of a payment's credit or refund (a database's hiccup)

MAX_TITLE = 32  # an invoice's title: 1-32 characters, counted in UTF-16 code units as Telegram counts


def invoice_title(name: str) -> str:
    """A pack's name as an invoice title: cut (with an ellipsis) where Telegram would refuse
    it. A pack name is 1-32 characters, but an emoji counts 2 to Telegram."""
    if len(name.encode("utf-16-le")) // 2 <= MAX_TITLE:
        return name
    title = ""
    for char in name:
        if len((title + char).encode("utf-16-le")) // 2 > MAX_TITLE - 1:
            break
        title += char
    return title + "…"


T = TypeVar("T")
Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


class StarsPayments:
    """The payment handlers; ``commands()`` names the commands for the adapter to register,
    ``add_handlers`` adds the update handlers."""

    def __init__(self, bot: Bot, settings: TelegramSettings, payments: PaymentsSettings, engine: Engine):
        self.bot, self.settings, self.payments, self.engine = bot, settings, payments, engine
        self._links: dict[str, str] = {}  # invoice payload -> its invoice link (a pack, as priced now)
        self._making = asyncio.Lock()  # one createInvoiceLink per pack, however many ask at once

    def commands(self) -> dict[str, Handler]:
        return {"buy": self._buy, "paysupport": self._support, "refund": self._refund}

    def add_handlers(self, app: Application) -> None:
        """The pre-checkout query and the two payment service messages. They pass no chat
        filter ([telegram] allowed_chats): a payment is taken wherever its invoice was opened."""
        handlers: list[BaseHandler[Update, Any, Any]] = [
            PreCheckoutQueryHandler(self._pre_checkout),
            MessageHandler(filters.SUCCESSFUL_PAYMENT, self._paid),
            MessageHandler(filters.StatusUpdate.REFUNDED_PAYMENT, self._refunded)]
        for handler in handlers:
            app.add_handler(handler)

    async def keyboard(self) -> InlineKeyboardMarkup | None:
        """A URL button per pack sold on Telegram, each opening that pack's invoice; None
        when none is sold (or Telegram made no link)."""
        packs = self.engine.packs_for(PLATFORM)
        if not packs:
            return None
        try:
            links = [(pack, await self._link(pack)) for pack in packs]
        except TelegramError as err:  # e.g. Telegram down: the list is still shown
            log.warning("invoice links not made: %s", err)
            return None
        return InlineKeyboardMarkup([[InlineKeyboardButton(
            messages.telegram_pack_button(pack.name, pack.credits, pack.stars), url=link)] for pack, link in links])

    async def _link(self, pack: Pack) -> str:
        """The pack's invoice link, made once. No provider_token: Stars need none, and an
        empty one would not arrive empty (PTB's Defaults turn an empty string into [])."""
        payload = invoice_payload(pack)
        async with self._making:
            if payload not in self._links:
                self._links[payload] = await self.bot.create_invoice_link(
                    title=invoice_title(pack.name), description=messages.pack_description(pack.credits),
                    payload=payload, currency=STARS,
                    prices=[LabeledPrice(pack.name, pack.stars)])
            return self._links[payload]

    # --- commands -----------------------------------------------------------------

    async def _buy(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = message_of(update)
        text, packs = await self.engine.buy_offer(user_ref(sender(message)))
        await message.reply_text(text, reply_markup=await self.keyboard() if packs else None)

    async def _support(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await message_of(update).reply_text(self.payments.support.strip() or messages.PAYSUPPORT)

    async def _refund(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/refund <charge id>``, or ``/refund`` replying to the buyer's message (their
        latest payment): Telegram returns the Stars, then the engine takes the credits back."""
        message, args = message_of(update), args_of(context)
        if message.sender_chat is not None or sender(message).id not in self.settings.admins:
            await message.reply_text(messages.TELEGRAM_ADMIN_COMMAND_ONLY)
            return
        replied = message.reply_to_message
        if len(args) == 1 and replied is None:
            key = telegram_key(args[0])
            payment = await self.engine.payment(key)
        elif not args and replied is not None and replied.from_user is not None and replied.sender_chat is None:
            payment = await self.engine.latest_payment(user_ref(replied.from_user))
            if payment is None:
                await message.reply_text(messages.TELEGRAM_REFUND_NO_PAYMENT)
                return
            key = str(payment["key"])
        else:
            await message.reply_text(messages.TELEGRAM_REFUND_USAGE)
            return
        returned = payment is not None and payment.get("refunded_at") is None  # Telegram asked for the Stars
        refused = await self._refund_at_telegram(payment) if payment is not None and returned else None
        if refused is not None:
            await message.reply_text(messages.telegram_refund_refused(refused))
            return
        # Unknown, refunded before, or refunded now at Telegram: the engine says which.
        try:
            outcome = await _retried(key, lambda: self.engine.refund_payment(key, by=str(sender(message).id)))
        except Exception as err:
            if payment is None or not returned:
                raise  # nothing changed at Telegram: "something went wrong" (the error handler) says enough
            # The Stars are back with the buyer: the admin must take the credits back.
            log.error("refund of payment %s not applied: %s: %s", key, type(err).__name__, err)
            await message.reply_text(messages.refund_not_applied(key, str(payment["user_key"]), PLATFORM))
            return
        stars = int(payment.get("stars") or 0) if payment else 0
        # As on Discord, the admin is told where the money went: here Telegram returned the Stars.
        await message.reply_text(messages.telegram_refund_reply(outcome.text, stars)
                                 if outcome.outcome == "refunded" and stars else outcome.text)

    async def _refund_at_telegram(self, payment: dict[str, Any]) -> str | None:
        """Ask Telegram to return the payment's Stars; None when they are returned (now or
        before), else Telegram's error."""
        user_id = int(str(payment["user_key"]).split(":", 1)[1])
        charge_id = str(payment["key"]).split(":", 1)[1]
        try:
            await self.bot.refund_star_payment(user_id, charge_id)
        except TelegramError as err:
            if ALREADY_REFUNDED in err.message.lower():  # returned before (by the bot, or Telegram's support)
                return None
            log.warning("refundStarPayment of %s refused: %s", payment["key"], err.message)
            return err.message
        return None

    # --- payment updates ----------------------------------------------------------

    async def _pre_checkout(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Answered here and now: Telegram cancels a checkout not answered within 10 s."""
        query = update.pre_checkout_query
        assert query is not None  # the handler takes nothing else
        try:
            verdict = await self.engine.check_purchase(
                user_ref(query.from_user), query.invoice_payload, query.currency, query.total_amount)
        except Exception as err:  # e.g. the database unreachable: no payment it cannot check
            log.error("pre-checkout %s not checked: %s: %s", query.id, type(err).__name__, err)
            verdict = messages.SOMETHING_WENT_WRONG
        await query.answer(ok=verdict is None, error_message=verdict)

    async def _paid(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Telegram took the Stars: credit what the invoice promised, once per charge. A charge
        not credited so (an invoice this bot cannot read, a write that failed) is told to the
        buyer and the admins: this update comes once, and the Stars are gone either way."""
        message = message_of(update)
        payment = message.successful_payment
        assert payment is not None  # filters.SUCCESSFUL_PAYMENT
        key, buyer = telegram_key(payment.telegram_payment_charge_id), user_ref(sender(message))
        not_credited = messages.payment_not_credited(key, buyer.key, payment.total_amount, payment.currency)
        promise = payload_promise(payment.invoice_payload)
        if promise is None:  # no invoice of ours (the pre-checkout refuses those): nothing to credit
            log.error("payment %s has no invoice of this bot's (payload %r): not credited",
                      key, payment.invoice_payload[:40])
            await self.engine.report_payment(not_credited)
            await message.reply_text(messages.PAYMENT_NOT_CREDITED)
            return
        credits, stars, pack = promise
        purchase = Purchase(
            key=key, user=buyer, pack=pack, credits=credits, stars=payment.total_amount,
            details={"payload": payment.invoice_payload, "currency": payment.currency, "invoice_stars": stars,
                     "provider_payment_charge_id": payment.provider_payment_charge_id,
                     "chat_id": message.chat_id, "message_id": message.message_id})
        try:
            credited = await self._credit(purchase)
        except Exception as err:  # the database failed every try: the charge must not vanish in a log
            log.error("payment %s not credited: %s: %s", key, type(err).__name__, err)
            await self.engine.report_payment(not_credited)
            await message.reply_text(messages.payment_not_saved(payment.telegram_payment_charge_id))
            return
        if not credited.new:  # a repeat of this payment (a retry, another process) says nothing again
            return
        await message.reply_text(credited.text)
        if (payment.currency, payment.total_amount) != (STARS, stars):  # never from Telegram for our invoices
            await self.engine.report_payment(messages.payment_mismatch(
                key, buyer.key, payment.total_amount, payment.currency, stars))

    async def _credit(self, purchase: Purchase) -> Credited:
        """Credit once by the charge's key (a retry of a write that did go through credits
        nothing twice)."""
        # The engine itself waits out a database that is offline (minutes): not tried again here too.
        return await _retried(purchase.key, lambda: self.engine.credit_purchase(purchase), offline_too=False)

    async def _refunded(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A refund made outside the bot (Telegram's support): the credits taken back once;
        the engine tells the admins."""
        message = message_of(update)
        refund = message.refunded_payment
        assert refund is not None  # filters.StatusUpdate.REFUNDED_PAYMENT
        key, buyer = telegram_key(refund.telegram_payment_charge_id), user_ref(sender(message))
        try:
            # The buyer named: a successful_payment handled after this (another front) credits nothing.
            await _retried(key, lambda: self.engine.refund_payment(key, by=PLATFORM, user=buyer))
        except Exception as err:  # the Stars are back with the buyer: the admins must take the credits
            log.error("refund of payment %s not applied: %s: %s", key, type(err).__name__, err)
            await self.engine.report_payment(messages.refund_not_applied(key, buyer.key, PLATFORM))


async def _retried(key: str, call: Callable[[], Coroutine[Any, Any, T]], *, offline_too: bool = True) -> T:
    """A payment's write, tried again after a failure (a database's hiccup): each is keyed
    by the charge, so a try that did go through and then failed to answer changes nothing twice.
    ``offline_too=False``: a StoreOffline (already waited out by the call) is not tried again."""
    for delay in WRITE_RETRIES:
        try:
            return await call()
        except StoreOffline:
            if not offline_too:
                raise
            log.warning("payment %s: the database is offline; trying again in %s s", key, delay)
            await asyncio.sleep(delay)
        except Exception as err:
            log.warning("payment %s: write failed (%s: %s); trying again in %s s", key, type(err).__name__, err, delay)
            await asyncio.sleep(delay)
    return await call()
