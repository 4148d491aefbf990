"""Attacks on Telegram Stars payments (#18), as a hostile user and as an unlucky operator:
forged pre-checkouts, payments that disagree with the packs, payments and refunds delivered
twice, out of order or to two fronts, /refund abused, invoices checked against Telegram's
rules, the token kept out of every message and log line, and webhook mode. The real
python-telegram-bot against the fake Bot API server (tests/fake_telegram.py)."""

# ruff: noqa: F811  (the fixtures imported from tests/test_telegram_payments.py, taken as arguments)

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import replace

import pytest

from adapters.telegram import TelegramAdapter
from bot import messages
from bot.config import Pack, PaymentsSettings
from bot.jobs import UserRef
from bot.payments import invoice_payload, invoice_payload_of, telegram_key
from tests.backends import raw_sql
from tests.fake_telegram import FakeTelegram
from tests.test_telegram_payments import (
    ADMIN,
    ALICE,
    BIG,
    BOB,
    CHARGE,
    DISCORD_ONLY,
    GROUP,
    STARTER,
    TOKEN,
    alice,
    free_port,
    pay,
    purchased,
    run_bot,  # noqa: F401  (a fixture)
    sent_to,
    telegram,  # noqa: F401  (a fixture)
    tg_settings,  # noqa: F401  (a fixture)
    until_quiet,
    webhook_fronts,
)

REFUSALS = {messages.PAYMENT_NOT_OURS, messages.PACK_GONE, messages.PACK_CHANGED,
            messages.PAYMENT_WRONG_CURRENCY, messages.PAYMENT_WRONG_AMOUNT}


def bob() -> UserRef:
    return UserRef("telegram", str(BOB))


async def answer_to(telegram: FakeTelegram, **query) -> dict:
    """Alice presses Pay: the bot's one (accepted) answer to her pre-checkout query."""
    asked = telegram.pre_checkout(ALICE, **query)["pre_checkout_query"]
    [answer] = await telegram.wait_for(lambda: telegram.checkout_answers(asked["id"]))
    assert answer["accepted"]
    return answer["params"]


# --- pre-checkout: forged invoices are refused ------------------------------------------

async def test_forged_or_stale_pre_checkouts_are_refused_with_a_reason_and_credit_nothing(run_bot, telegram):
    engine, _ = await run_bot()
    cheap_big = invoice_payload_of(BIG.credits, STARTER.stars, BIG.name)  # Big's name, Starter's price
    forged = {
        "another pack's name at a lower price": (cheap_big, STARTER.stars, "XTR", messages.PACK_CHANGED),
        "credits no pack has": (invoice_payload_of(5000, 100, "Starter"), 100, "XTR", messages.PACK_CHANGED),
        "a pack not sold (any more)": (invoice_payload(Pack("Gone", 10, stars=5)), 5, "XTR", messages.PACK_GONE),
        "a pack sold on Discord only": (invoice_payload_of(50, 1, DISCORD_ONLY.name), 1, "XTR", messages.PACK_GONE),
        "garbage": ("'; drop table payments; --", 100, "XTR", messages.PAYMENT_NOT_OURS),
        "another bot's": ("order-42", 100, "XTR", messages.PAYMENT_NOT_OURS),
        "a cut one": (invoice_payload(STARTER)[:9], 100, "XTR", messages.PAYMENT_NOT_OURS),
        "zero credits": (invoice_payload_of(0, 100, "Starter"), 100, "XTR", messages.PAYMENT_NOT_OURS),
        "a leading zero": (invoice_payload(STARTER).replace("|20|", "|020|"), 100, "XTR", messages.PAYMENT_NOT_OURS),
        "a superscript digit": (invoice_payload(STARTER).replace("|20|", "|2²|"), 100, "XTR",
                                messages.PAYMENT_NOT_OURS),
        "129 bytes": (invoice_payload(STARTER) + "x" * (129 - len(invoice_payload(STARTER))), 100, "XTR",
                      messages.PAYMENT_NOT_OURS),
        "4,000 bytes": ("kling1|20|100|" + "S" * 4000, 100, "XTR", messages.PAYMENT_NOT_OURS),
        "the wrong currency": (invoice_payload(STARTER), 100, "USD", messages.PAYMENT_WRONG_CURRENCY),
        "less than the price": (invoice_payload(STARTER), 1, "XTR", messages.PAYMENT_WRONG_AMOUNT),
        "more than the price": (invoice_payload(STARTER), 101, "XTR", messages.PAYMENT_WRONG_AMOUNT),
    }
    for what, (payload, total, currency, reason) in forged.items():
        answer = await answer_to(telegram, total_amount=total, invoice_payload=payload, currency=currency)
        assert (answer["ok"], answer.get("error_message")) == (False, reason), what
    assert all(len(reason) <= 255 and "\n" not in reason for reason in REFUSALS)  # shown as is by Telegram
    assert await purchased(engine) == 0
    assert await engine.store.latest_payment(alice().key) is None
    # the real one still goes through
    answer = await answer_to(telegram, total_amount=STARTER.stars, invoice_payload=invoice_payload(STARTER))
    assert answer["ok"] is True and "error_message" not in answer


# --- successful payments that disagree with the packs ---------------------------------------

async def test_a_payment_for_a_pack_changed_since_its_checkout_credits_what_was_paid_for(
        run_bot, telegram, tg_settings):
    """The price went up between the pre-checkout and the payment (another front still had
    the old config): the buyer gets what their invoice promised, for the Stars they paid."""
    engine, _ = await run_bot(replace(tg_settings, payments=PaymentsSettings(packs=[replace(STARTER, stars=150)])))
    telegram.paid(ALICE, charge_id=CHARGE, total_amount=100, invoice_payload=invoice_payload(STARTER))
    [thanks] = await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    assert thanks["text"] == messages.purchase_credited("Starter", 20, 10 + 20)
    payment = await engine.payment(telegram_key(CHARGE))
    assert (payment["credits"], payment["stars"], payment["pack"]) == (20, 100, "Starter")


async def test_a_payment_whose_amount_or_currency_disagrees_with_its_invoice_is_credited_and_the_admins_told(
        run_bot, telegram):
    engine, _ = await run_bot()
    telegram.paid(ALICE, charge_id=CHARGE, total_amount=1, invoice_payload=invoice_payload(BIG))
    [thanks] = await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    assert thanks["text"] == messages.purchase_credited("Big", 100, 10 + 100)  # what the invoice promised
    [alert] = await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    assert alert["text"] == messages.payment_mismatch(telegram_key(CHARGE), alice().key, 1, "XTR", BIG.stars)
    assert await purchased(engine) == BIG.credits
    telegram.paid(ALICE, charge_id="stxEUR", total_amount=400, invoice_payload=invoice_payload(BIG), currency="EUR")
    await telegram.wait_for(lambda: len(sent_to(telegram, ADMIN)) == 2)
    assert sent_to(telegram, ADMIN)[1]["text"] == messages.payment_mismatch(
        telegram_key("stxEUR"), alice().key, 400, "EUR", BIG.stars)
    assert await purchased(engine) == 2 * BIG.credits


async def test_a_payment_with_no_invoice_of_ours_is_not_lost_silently(run_bot, telegram):
    """Telegram took Alice's Stars for a payload this bot cannot read (an invoice of an
    older version, a bug): nothing to credit, but the buyer and the admins are told, with
    the charge id the admin needs to refund it."""
    engine, _ = await run_bot()
    telegram.paid(ALICE, charge_id=CHARGE, total_amount=100, invoice_payload="kling0|legacy")
    [told] = await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    assert told["text"] == messages.PAYMENT_NOT_CREDITED
    [alert] = await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    assert alert["text"] == messages.payment_not_credited(telegram_key(CHARGE), alice().key, 100, "XTR")
    await until_quiet(telegram)
    assert await purchased(engine) == 0


async def test_a_payment_the_database_refuses_is_not_lost_silently(run_bot, telegram, tg_settings):
    """The database fails the credit's write: the update is gone (polling moved past it,
    a webhook answered 200), so the buyer and the admins hear of the charge, not just a log."""
    engine, _ = await run_bot()
    with sqlite3.connect(tg_settings.storage.path) as db:  # the disk starts failing writes of payments
        db.execute("create trigger broken before insert on payments begin select raise(abort, 'disk I/O error'); end")
    pay(telegram)
    [told] = await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    assert told["text"] == messages.payment_not_saved(CHARGE)
    [alert] = await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    assert alert["text"] == messages.payment_not_credited(telegram_key(CHARGE), alice().key, 100, "XTR")
    await until_quiet(telegram)
    assert await purchased(engine) == 0


# --- delivered twice, to two fronts, on either database --------------------------------------

@pytest.mark.both_backends
async def test_one_payment_delivered_again_and_again_to_two_fronts_credits_once_on_either_database(
        telegram, adapter_runner, tg_settings):
    (a, a_url), (b, b_url) = await webhook_fronts(adapter_runner, tg_settings, 2)
    message = pay(telegram, push=False)
    updates = [telegram.new_update({"message": message}) for _ in range(3)]
    deliveries = [telegram.deliver(update, to=url) for update in updates for url in (a_url, b_url)]
    assert await asyncio.gather(*deliveries) == [200] * 6
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    await until_quiet(telegram)
    assert len(sent_to(telegram, ALICE)) == 1
    assert await purchased(a[0]) == await purchased(b[0]) == STARTER.credits
    ledger = await raw_sql(a[0].store, "select purchased_delta, note from ledger where entry = 'purchase'")
    assert ledger == [{"purchased_delta": STARTER.credits, "note": telegram_key(CHARGE)}]


# --- refunded_payment: twice, first, for someone else --------------------------------------

async def test_a_refund_before_its_payment_credits_nothing_and_a_second_one_says_nothing(run_bot, telegram):
    engine, _ = await run_bot()
    for _ in range(2):
        telegram.refunded(ALICE, charge_id=CHARGE, total_amount=100, invoice_payload=invoice_payload(STARTER))
    await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    pay(telegram)  # the payment's own message, handled after its refund's (another front, a retry)
    await until_quiet(telegram)
    assert [m["text"] for m in sent_to(telegram, ADMIN)] == [
        messages.refund_unknown_by_platform(telegram_key(CHARGE), "telegram")]
    assert await purchased(engine) == 0
    assert sent_to(telegram, ALICE) == []  # nothing credited, nothing said


async def test_a_refund_message_in_another_users_chat_takes_back_from_the_buyer_only(run_bot, telegram):
    engine, _ = await run_bot()
    pay(telegram)
    pay(telegram, BIG, user=BOB, charge="stxBOB")
    await telegram.wait_for(lambda: sent_to(telegram, ALICE) and sent_to(telegram, BOB))
    telegram.refunded(BOB, charge_id=CHARGE, total_amount=100, invoice_payload=invoice_payload(STARTER))
    [alert] = await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    assert alert["text"] == messages.refund_done(telegram_key(CHARGE), alice().key, 20, 0, "telegram")
    assert await purchased(engine) == 0 and await purchased(engine, bob()) == BIG.credits


async def test_a_refund_by_telegram_the_database_refuses_is_told_to_the_admins_not_the_buyer(
        run_bot, telegram, tg_settings):
    """Telegram returned the Stars, but the database fails the refund's write: the buyer
    keeps credits they got back the Stars for unless an admin hears of it (the update
    comes once); the buyer is not told "something went wrong" about their own refund."""
    engine, _ = await run_bot()
    pay(telegram)
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    with sqlite3.connect(tg_settings.storage.path) as db:
        db.execute("create trigger broken before update on payments begin select raise(abort, 'disk I/O error'); end")
    telegram.refunded(ALICE, charge_id=CHARGE, total_amount=100, invoice_payload=invoice_payload(STARTER))
    [alert] = await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    assert alert["text"] == messages.refund_not_applied(telegram_key(CHARGE), alice().key, "telegram")
    await until_quiet(telegram)
    assert len(sent_to(telegram, ALICE)) == 1  # the thanks for the payment, nothing more
    assert await purchased(engine) == STARTER.credits  # not taken back: the admin does it by hand


async def test_an_admins_refund_the_database_fails_after_telegram_returned_the_stars_says_so(
        run_bot, telegram, tg_settings):
    engine, _ = await run_bot()
    pay(telegram)
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    with sqlite3.connect(tg_settings.storage.path) as db:
        db.execute("create trigger broken before update on payments begin select raise(abort, 'disk I/O error'); end")
    telegram.user_message(ADMIN, ADMIN, text=f"/refund {CHARGE}")
    [told] = await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    await until_quiet(telegram)
    assert [m["text"] for m in sent_to(telegram, ADMIN)] == [
        messages.refund_not_applied(telegram_key(CHARGE), alice().key, "telegram")]
    assert len(telegram.refunds) == 1 and await purchased(engine) == STARTER.credits
    with sqlite3.connect(tg_settings.storage.path) as db:  # the disk mended, the admin tries again
        db.execute("drop trigger broken")
    telegram.user_message(ADMIN, ADMIN, text=f"/refund {CHARGE}")
    await telegram.wait_for(lambda: len(sent_to(telegram, ADMIN)) == 2)
    assert sent_to(telegram, ADMIN)[1]["text"] == messages.telegram_refund_reply(messages.refund_done(
        telegram_key(CHARGE), alice().key, 20, 0, str(ADMIN)), 100)  # CHARGE_ALREADY_REFUNDED at Telegram
    assert len(telegram.refunds) == 1 and await purchased(engine) == 0


# --- /refund abused ---------------------------------------------------------------------------

async def test_refund_by_a_non_admin_in_a_group_and_with_garbage_arguments_refunds_nothing(run_bot, telegram):
    engine, _ = await run_bot()
    pay(telegram)
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    telegram.user_message(GROUP, BOB, text=f"/refund {CHARGE}")
    [refused] = await telegram.wait_for(lambda: sent_to(telegram, GROUP))
    assert refused["text"] == messages.TELEGRAM_ADMIN_COMMAND_ONLY
    for garbage in ("x" * 4000, f"{CHARGE} {CHARGE}", "<b>&amp;</b>", "telegram:" + CHARGE, "''"):
        count = len(sent_to(telegram, ADMIN))
        telegram.user_message(ADMIN, ADMIN, text=f"/refund {garbage}")
        await telegram.wait_for(lambda count=count: len(sent_to(telegram, ADMIN)) == count + 1)
        answer = sent_to(telegram, ADMIN)[-1]["text"]
        assert len(answer) <= 300 and answer.startswith(("No payment", "Reply /refund")), garbage
    assert telegram.calls_to("refundStarPayment") == []
    assert await purchased(engine) == STARTER.credits


async def test_an_admin_refunds_in_a_group_by_another_users_charge_id_once(run_bot, telegram):
    engine, _ = await run_bot()
    pay(telegram)
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    for _ in range(2):
        telegram.user_message(GROUP, ADMIN, text=f"/refund {CHARGE}")
    await telegram.wait_for(lambda: len(sent_to(telegram, GROUP)) == 2)
    assert sorted(m["text"] for m in sent_to(telegram, GROUP)) == sorted([
        messages.telegram_refund_reply(messages.refund_done(telegram_key(CHARGE), alice().key, 20, 0, str(ADMIN)),
                                       100),
        messages.refund_already(telegram_key(CHARGE))])
    assert [c["params"] for c in telegram.calls_to("refundStarPayment")] <= [
        {"user_id": ALICE, "telegram_payment_charge_id": CHARGE}] * 2
    assert telegram.refunds[0]["user_id"] == ALICE and len(telegram.refunds) == 1
    assert await purchased(engine) == 0


# --- /buy and the invoices --------------------------------------------------------------------

async def test_buy_in_a_group_offers_the_same_stars_invoices_and_credits_whoever_pays(run_bot, telegram, tg_settings):
    big_name = replace(BIG, name="🎬" * 32)  # 128 bytes of UTF-8 in the name alone: packed
    engine, _ = await run_bot(replace(tg_settings, payments=PaymentsSettings(packs=[STARTER, big_name])))
    telegram.user_message(GROUP, ALICE, text="/buy")
    [offer] = await telegram.wait_for(lambda: sent_to(telegram, GROUP))
    assert [row[0]["url"] for row in offer["reply_markup"]["inline_keyboard"]] == [
        made["link"] for made in telegram.invoice_links]
    for made, pack in zip(telegram.invoice_links, (STARTER, big_name), strict=True):
        params = made["params"]
        assert params["currency"] == "XTR" and params.get("provider_token") in (None, "")
        assert params["prices"] == [{"label": pack.name, "amount": pack.stars}]
        assert params["title"] == (pack.name if pack is STARTER else "🎬" * 15 + "…")  # 32 UTF-16 units at most
        assert 1 <= len(params["payload"].encode()) <= 128 and params["payload"] == invoice_payload(pack)
    telegram.user_message(BOB, BOB, text="/buy")
    await telegram.wait_for(lambda: sent_to(telegram, BOB))
    answer = await answer_to(telegram, total_amount=big_name.stars, invoice_payload=invoice_payload(big_name))
    assert answer["ok"] is True
    pay(telegram, big_name, user=BOB, charge="stxBOB")
    await telegram.wait_for(lambda: len(sent_to(telegram, BOB)) == 2)
    assert await purchased(engine, bob()) == BIG.credits and await purchased(engine) == 0


async def test_the_token_is_in_no_message_and_no_log_line_of_the_payment_flows(run_bot, telegram, caplog):
    caplog.set_level(logging.DEBUG)
    engine, _ = await run_bot()
    telegram.user_message(ALICE, ALICE, text="/buy")
    await answer_to(telegram, total_amount=100, invoice_payload=invoice_payload(STARTER))
    await answer_to(telegram, total_amount=100, invoice_payload="garbage")
    pay(telegram)
    telegram.paid(ALICE, charge_id="stxODD", total_amount=100, invoice_payload="garbage")
    telegram.flood_next("refundStarPayment")
    telegram.user_message(ADMIN, ADMIN, text=f"/refund {CHARGE}")
    telegram.user_message(ADMIN, ADMIN, text="/refund stxNOPE")
    await telegram.wait_for(lambda: len(sent_to(telegram, ADMIN)) >= 2)
    await until_quiet(telegram)
    secret = TOKEN.split(":", 1)[1]
    texts = [str(call["params"]) for call in telegram.calls]
    assert not [t for t in texts if secret in t]
    assert not [r.getMessage() for r in caplog.records if secret in r.getMessage() or secret in str(r.exc_text)]


# --- webhook mode -----------------------------------------------------------------------------

async def test_webhook_mode_answers_the_pre_checkout_and_credits_a_replayed_payment_once(
        telegram, adapter_runner, tg_settings):
    port = free_port()
    hooked = replace(tg_settings, telegram=replace(
        tg_settings.telegram, webhook_url=f"http://127.0.0.1:{port}/telegram",
        webhook_listen=f"127.0.0.1:{port}", secret_token="front-SECRET"))
    engine, _ = await adapter_runner(hooked, TelegramAdapter)
    assert telegram.webhook is not None and "pre_checkout_query" in telegram.webhook.get("allowed_updates", [])
    answer = await answer_to(telegram, total_amount=100, invoice_payload=invoice_payload(STARTER))
    assert answer["ok"] is True
    update = telegram.new_update({"message": pay(telegram, push=False)})
    for _ in range(3):  # Telegram retrying a delivery it thinks failed
        assert await telegram.deliver(update) == 200
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    await until_quiet(telegram)
    assert len(sent_to(telegram, ALICE)) == 1 and await purchased(engine) == STARTER.credits
    # Anyone else POSTing a payment to the webhook's address (no or a wrong secret): not handled.
    forged = telegram.new_update({"message": pay(telegram, BIG, charge="stxFORGED", push=False)})
    assert [await telegram.deliver(forged, secret_token=secret) for secret in ("wrong", None)] == [401, 401]
    await until_quiet(telegram)
    assert await purchased(engine) == STARTER.credits and len(sent_to(telegram, ALICE)) == 1


# --- real charge ids are long -----------------------------------------------------------------

LONG_CHARGE = "stxhi4w_" + "a1B-" * 33  # Telegram's Stars charge ids run past 128 characters


@pytest.mark.both_backends
async def test_the_admins_messages_name_a_long_charge_id_whole_so_it_can_be_refunded_by_it(run_bot, telegram):
    """An admin copies a charge id out of the bot's messages into /refund: each message
    names it whole (Telegram's ids are over 128 characters), and /refund with it works."""
    engine, _ = await run_bot()
    pay(telegram, charge=LONG_CHARGE)
    pay(telegram, BIG, charge=LONG_CHARGE + "2")
    await telegram.wait_for(lambda: len(sent_to(telegram, ALICE)) == 2)
    telegram.refunded(ALICE, charge_id=LONG_CHARGE, total_amount=100, invoice_payload=invoice_payload(STARTER))
    [alert] = await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    assert alert["text"] == messages.refund_done(telegram_key(LONG_CHARGE), alice().key, 20, 0, "telegram")
    assert telegram_key(LONG_CHARGE) in alert["text"]
    telegram.user_message(ADMIN, ADMIN, text=f"/refund {LONG_CHARGE}")
    await telegram.wait_for(lambda: len(sent_to(telegram, ADMIN)) == 2)
    assert telegram_key(LONG_CHARGE) in sent_to(telegram, ADMIN)[1]["text"]  # "refunded already"
    said = telegram.user_message(GROUP, ALICE, text="hi", push=False)
    telegram.user_message(GROUP, ADMIN, text="/refund", reply_to=said)  # her latest payment, by reply
    [done] = await telegram.wait_for(lambda: sent_to(telegram, GROUP))
    assert telegram_key(LONG_CHARGE + "2") in done["text"]
    assert [c["params"]["telegram_payment_charge_id"] for c in telegram.calls_to("refundStarPayment")] == [
        LONG_CHARGE + "2"]
    assert await purchased(engine) == 0
