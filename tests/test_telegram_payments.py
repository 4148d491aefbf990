"""Telegram Stars (#18): the real python-telegram-bot against the fake Bot API server, whose
invoices, pre-checkout answers and refunds follow Telegram's rules (tests/fake_telegram.py)
and the Bot API spec (tests/spec_check.py)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import pytest
from telegram import Bot, LabeledPrice
from telegram.error import BadRequest
from telegram.ext import ExtBot

from adapters.telegram import TelegramAdapter
from adapters.telegram.delivery import reply_defaults
from bot import messages
from bot.config import Pack, PaymentsSettings
from bot.jobs import UserRef
from bot.payments import invoice_payload, telegram_key
from tests.fake_telegram import FakeTelegram
from tests.helpers import image_bytes

TOKEN = "123456:STARS-test-token-SECRET"
ALICE, BOB, ADMIN = 1001, 1002, 1003
GROUP = -100500
STARTER, BIG = Pack("Starter", 20, stars=100), Pack("Big", 100, stars=400)
DISCORD_ONLY = Pack("Discord only", 50, discord_sku="1234567890123456789")
CHARGE = "stxCHARGE-1"


def alice() -> UserRef:
    return UserRef("telegram", str(ALICE))


@pytest.fixture
async def telegram():
    fake = FakeTelegram(TOKEN, local=True)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def tg_settings(settings, telegram):
    return replace(
        settings, payments=PaymentsSettings(packs=[STARTER, BIG, DISCORD_ONLY], support="Write to pay@example.com"),
        telegram=replace(settings.telegram, token=TOKEN, base_url=telegram.base_url,
                         base_file_url=telegram.base_file_url, progress_interval=0.0, admins=[ADMIN]))


@pytest.fixture
def run_bot(tg_settings, adapter_runner):
    return lambda custom=None: adapter_runner(custom or tg_settings, TelegramAdapter)


def sent_to(telegram: FakeTelegram, chat: int) -> list[dict]:
    return [c["params"] for c in telegram.calls_to("sendMessage") if c["params"]["chat_id"] == chat]


def pay(telegram: FakeTelegram, pack: Pack = STARTER, *, user: int = ALICE, charge: str = CHARGE,
        push: bool = True) -> dict:
    """The buyer paid for ``pack``: Telegram's successful_payment message."""
    return telegram.paid(user, charge_id=charge, total_amount=pack.stars, invoice_payload=invoice_payload(pack),
                         provider_charge_id="", push=push)


async def purchased(engine, user: UserRef | None = None) -> int:
    return (await engine.balance(user or alice())).purchased


async def _has(engine, credits: int) -> bool:
    return await purchased(engine) == credits


async def _ended(engine) -> bool:
    """Alice's jobs have all ended (a delivered one's credits are spent)."""
    return not await engine.store.user_jobs(alice().key, active_only=True)


async def until_quiet(telegram: FakeTelegram) -> None:
    """Until the bot has sent nothing for a moment (a handler that would send twice has)."""
    count = -1
    while count != len(telegram.calls):
        count = len(telegram.calls)
        await asyncio.sleep(0.3)


# --- the fake answers as Telegram does --------------------------------------------------

async def test_the_fake_refuses_a_stars_invoice_telegram_refuses_and_takes_a_good_one(telegram):
    good = {"title": "Starter", "description": "20 credits", "payload": invoice_payload(STARTER),
            "currency": "XTR", "prices": [LabeledPrice("Starter", 100)]}
    async with Bot(TOKEN, base_url=telegram.base_url, base_file_url=telegram.base_file_url) as bot:
        link = await bot.create_invoice_link(**good, provider_token="")
        assert link.startswith("https://t.me/$")
        invoice = (await bot.send_invoice(ALICE, **good)).invoice  # provider_token left out: also Stars
        assert invoice is not None and (invoice.currency, invoice.total_amount) == ("XTR", 100)
        assert telegram.violations == []
        bad = {"a provider token": {"provider_token": "284685063:TEST:abc"},
               "two prices": {"prices": [LabeledPrice("a", 50), LabeledPrice("b", 50)]},
               "no price": {"prices": []},
               "a zero amount": {"prices": [LabeledPrice("Starter", 0)]},
               "a negative amount": {"prices": [LabeledPrice("Starter", -5)]},
               "tips": {"max_tip_amount": 10, "suggested_tip_amounts": [5]},
               "another currency without a provider": {"currency": "USD"},
               "a 33-character title": {"title": "x" * 33},
               "an empty description": {"description": ""},
               "a 256-character description": {"description": "d" * 256},
               "a 129-byte payload": {"payload": "é" * 64 + "x"}}
        for change in bad.values():
            with pytest.raises(BadRequest):
                await bot.create_invoice_link(**{**good, "provider_token": "", **change})
            with pytest.raises(BadRequest):
                await bot.send_invoice(ALICE, **{**good, **change})
    assert len(telegram.violations) == 2 * 4  # title, both descriptions, payload: the spec's limits
    telegram.violations.clear()
    assert len(telegram.invoice_links) == 1


async def test_an_empty_provider_token_through_ptbs_defaults_is_a_token_and_refused(telegram):
    """PTB's ExtBot with Defaults (as the bot's) sends provider_token="" as "[]": a token,
    so Telegram refuses the Stars invoice. The bot leaves provider_token out."""
    bot = ExtBot(TOKEN, base_url=telegram.base_url, defaults=reply_defaults())
    async with bot:
        with pytest.raises(BadRequest, match=r"(?i)stars_invoice_invalid"):
            await bot.create_invoice_link("Starter", "20 credits", invoice_payload(STARTER), "XTR",
                                          [LabeledPrice("Starter", 100)], provider_token="")
        assert await bot.create_invoice_link("Starter", "20 credits", invoice_payload(STARTER), "XTR",
                                             [LabeledPrice("Starter", 100)])


async def test_the_fake_takes_one_answer_per_pre_checkout_within_ten_seconds_and_refunds_once(telegram):
    async with Bot(TOKEN, base_url=telegram.base_url, base_file_url=telegram.base_file_url) as bot:
        query = telegram.pre_checkout(ALICE, total_amount=100, invoice_payload="p")["pre_checkout_query"]
        assert await bot.answer_pre_checkout_query(query["id"], ok=True)
        with pytest.raises(BadRequest, match=r"(?i)query_id_invalid"):  # a second answer
            await bot.answer_pre_checkout_query(query["id"], ok=True)
        late = telegram.pre_checkout(ALICE, total_amount=100, invoice_payload="p")["pre_checkout_query"]
        telegram.answer_window = 0.0  # as if 10 s had gone by
        with pytest.raises(BadRequest, match=r"(?i)query_id_invalid"):
            await bot.answer_pre_checkout_query(late["id"], ok=True)
        assert [a["accepted"] for a in telegram.checkout_answers(query["id"])] == [True, False]

        pay(telegram, push=False)
        for user_id, charge in ((BOB, CHARGE), (ALICE, "stxUNKNOWN")):  # not Bob's; no such charge
            with pytest.raises(BadRequest, match=r"(?i)charge_not_found"):
                await bot.refund_star_payment(user_id, charge)
        assert await bot.refund_star_payment(ALICE, CHARGE)
        with pytest.raises(BadRequest, match=r"(?i)charge_already_refunded"):
            await bot.refund_star_payment(ALICE, CHARGE)
    assert [(r["user_id"], r["telegram_payment_charge_id"]) for r in telegram.refunds] == [(ALICE, CHARGE)]


# --- /buy, /paysupport, the menu ---------------------------------------------------------

async def test_buy_shows_the_packs_each_with_its_stars_invoice_link_made_once(run_bot, telegram):
    engine, _ = await run_bot()
    telegram.user_message(ALICE, ALICE, text="/buy")
    [answer] = await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    assert answer["text"] == engine.buy_text("telegram")
    links = telegram.invoice_links
    assert [row[0]["url"] for row in answer["reply_markup"]["inline_keyboard"]] == [made["link"] for made in links]
    assert [made["params"]["title"] for made in links] == ["Starter", "Big"]  # not the Discord-only pack
    for made, pack in zip(links, (STARTER, BIG), strict=True):
        params = made["params"]
        assert params["currency"] == "XTR" and "provider_token" not in params  # Stars need none
        assert params["prices"] == [{"label": pack.name, "amount": pack.stars}]
        assert params["payload"] == invoice_payload(pack)
    assert "100" in answer["reply_markup"]["inline_keyboard"][0][0]["text"]

    telegram.user_message(BOB, BOB, text="/buy")
    [again] = await telegram.wait_for(lambda: sent_to(telegram, BOB))
    assert again["reply_markup"] == answer["reply_markup"]
    assert len(telegram.calls_to("createInvoiceLink")) == 2  # one link per pack per process


async def test_buy_offers_a_banned_user_no_invoice(run_bot, telegram):
    engine, _ = await run_bot()
    await engine.ban(f"telegram:{ALICE}", "test", "spam")
    telegram.user_message(ALICE, ALICE, text="/buy")
    [answer] = await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    assert answer["text"] == messages.PAYMENT_BANNED and "reply_markup" not in answer
    assert telegram.calls_to("createInvoiceLink") == []


async def test_paysupport_and_the_menu_and_help_name_the_payment_commands(run_bot, telegram):
    await run_bot()
    [menu] = telegram.calls_to("setMyCommands")
    assert [c["command"] for c in menu["params"]["commands"]][-2:] == ["buy", "paysupport"]
    telegram.user_message(ALICE, ALICE, text="/paysupport")
    [support] = await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    assert support["text"] == "Write to pay@example.com"
    telegram.user_message(ALICE, ALICE, text="/help")
    await telegram.wait_for(lambda: len(sent_to(telegram, ALICE)) == 2)
    assert "/buy" in sent_to(telegram, ALICE)[1]["text"]


async def test_a_bot_selling_nothing_on_telegram_does_not_offer_buy(run_bot, telegram, tg_settings):
    await run_bot(replace(tg_settings, payments=PaymentsSettings(packs=[DISCORD_ONLY])))
    [menu] = telegram.calls_to("setMyCommands")
    assert "buy" not in [c["command"] for c in menu["params"]["commands"]]
    telegram.user_message(ALICE, ALICE, text="/paysupport")
    [support] = await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    assert support["text"] == messages.PAYSUPPORT
    telegram.user_message(ALICE, ALICE, text="/buy")
    await telegram.wait_for(lambda: len(sent_to(telegram, ALICE)) == 2)
    assert "reply_markup" not in sent_to(telegram, ALICE)[1]
    assert telegram.calls_to("createInvoiceLink") == []


async def test_a_refusal_for_lack_of_credits_carries_the_buy_buttons(run_bot, telegram, simulator):
    engine, _ = await run_bot()
    await engine.set_credits(alice(), 0)
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    [refusal] = await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    buttons = refusal["reply_markup"]["inline_keyboard"]
    assert [row[0]["url"] for row in buttons] == [made["link"] for made in telegram.invoice_links]
    assert len(buttons) == 2 and simulator.submissions == []


async def test_a_button_refused_for_lack_of_credits_is_followed_by_the_buy_buttons(run_bot, telegram, simulator):
    engine, _ = await run_bot()
    await engine.set_credits(alice(), 0)
    telegram.user_message(ALICE, ALICE, photo=image_bytes())
    [menu_call] = await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    menu = telegram.messages[(ALICE, max(m for c, m in telegram.messages if c == ALICE))]
    telegram.press_button(ALICE, menu, menu_call["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
    [alert] = await telegram.wait_for(lambda: telegram.calls_to("answerCallbackQuery"))
    assert alert["params"]["show_alert"] is True
    await telegram.wait_for(lambda: len(sent_to(telegram, ALICE)) == 2)
    offer = sent_to(telegram, ALICE)[1]
    assert offer["text"] == engine.buy_text("telegram")
    assert offer["reply_parameters"]["message_id"] == menu["message_id"]
    assert [row[0]["url"] for row in offer["reply_markup"]["inline_keyboard"]] == [
        made["link"] for made in telegram.invoice_links]
    assert simulator.submissions == []


# --- pre-checkout -------------------------------------------------------------------------

async def test_the_pre_checkout_is_answered_well_within_ten_seconds_while_50_jobs_are_being_accepted(
        run_bot, telegram):
    engine, _ = await run_bot()
    telegram.download_delay = 2.0  # every photo's download is slow: 50 handlers wait on Telegram
    for n in range(50):
        telegram.user_message(2000 + n, 2000 + n, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: len(telegram.calls_to("getFile")) == 50, timeout=60)
    query = telegram.pre_checkout(ALICE, total_amount=STARTER.stars,
                                  invoice_payload=invoice_payload(STARTER))["pre_checkout_query"]
    [answer] = await telegram.wait_for(lambda: telegram.checkout_answers(query["id"]))
    assert answer["accepted"] and answer["params"]["ok"] is True
    # Telegram allows 10 s; an answer that waited for a download (2 s each) would come later.
    assert answer["at"] < 1.5
    assert len(telegram.calls_to("editMessageText")) < 50  # the jobs were still being accepted
    await engine.pause("", "telegram:1")  # the test is over: no need to make the 50 videos


async def test_a_changed_price_and_a_banned_buyer_are_refused_at_checkout_with_the_engines_reason(
        run_bot, telegram):
    engine, _ = await run_bot()
    old_price = invoice_payload(replace(STARTER, stars=90))  # an invoice made before the price went up
    changed = telegram.pre_checkout(ALICE, total_amount=90, invoice_payload=old_price)["pre_checkout_query"]
    [answer] = await telegram.wait_for(lambda: telegram.checkout_answers(changed["id"]))
    reason = await engine.check_purchase(alice(), old_price, "XTR", 90)
    assert reason and answer["accepted"]
    assert (answer["params"]["ok"], answer["params"]["error_message"]) == (False, reason)

    await engine.ban(UserRef("telegram", str(BOB)).key, "telegram:1003", "spam")
    payload = invoice_payload(STARTER)
    banned = telegram.pre_checkout(BOB, total_amount=100, invoice_payload=payload)["pre_checkout_query"]
    [answer] = await telegram.wait_for(lambda: telegram.checkout_answers(banned["id"]))
    reason = await engine.check_purchase(UserRef("telegram", str(BOB)), payload, "XTR", 100)
    assert reason and (answer["params"]["ok"], answer["params"]["error_message"]) == (False, reason)
    assert await purchased(engine, UserRef("telegram", str(BOB))) == 0


# --- successful payments: credited once ---------------------------------------------------

async def test_the_same_successful_payment_delivered_twice_credits_once_and_thanks_once(run_bot, telegram):
    engine, _ = await run_bot()
    pay(telegram)
    pay(telegram)  # Telegram sending it again (another update, the same charge)
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    await until_quiet(telegram)
    assert [m["text"] for m in sent_to(telegram, ALICE)] == [messages.purchase_credited("Starter", 20, 10 + 20)]
    assert await purchased(engine) == STARTER.credits
    payment = await engine.payment(telegram_key(CHARGE))
    assert payment is not None and (payment["credits"], payment["stars"]) == (20, 100)
    assert (await engine.balance(alice())).total == 10 + 20  # the daily ones too


async def webhook_fronts(adapter_runner, tg_settings, count):
    """``count`` fronts in webhook mode on one database: ((engine, adapter), webhook URL) each."""
    fronts = []
    for _ in range(count):
        port = free_port()
        own = replace(tg_settings, telegram=replace(
            tg_settings.telegram, webhook_url=f"http://127.0.0.1:{port}/telegram",
            webhook_listen=f"127.0.0.1:{port}", secret_token="front-SECRET"))
        fronts.append((await adapter_runner(own, TelegramAdapter), f"http://127.0.0.1:{port}/telegram"))
    return fronts


async def test_a_payment_delivered_to_two_fronts_on_one_database_credits_once(
        telegram, adapter_runner, tg_settings):
    (a, a_url), (b, b_url) = await webhook_fronts(adapter_runner, tg_settings, 2)
    message = pay(telegram, push=False)
    first, second = telegram.new_update({"message": message}), telegram.new_update({"message": message})
    statuses = await asyncio.gather(telegram.deliver(first, to=a_url), telegram.deliver(second, to=b_url),
                                    telegram.deliver(first, to=b_url))
    assert statuses == [200, 200, 200]
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    await until_quiet(telegram)
    assert len(sent_to(telegram, ALICE)) == 1
    assert await purchased(a[0]) == await purchased(b[0]) == STARTER.credits


# --- refunds --------------------------------------------------------------------------------

async def test_an_admin_refunds_by_charge_id_and_a_second_refund_says_already(run_bot, telegram):
    engine, _ = await run_bot()
    pay(telegram)
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    telegram.user_message(ADMIN, ADMIN, text=f"/refund {CHARGE}")
    [told] = await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    [call] = telegram.calls_to("refundStarPayment")
    assert call["params"] == {"user_id": ALICE, "telegram_payment_charge_id": CHARGE}
    assert await purchased(engine) == 0
    payment = await engine.payment(telegram_key(CHARGE))
    assert payment["refunded_at"] is not None and payment["refunded_by"] == str(ADMIN)
    assert told["text"] == messages.refund_done(telegram_key(CHARGE), alice().key, 20, 0, str(ADMIN)) \
        + "\nTelegram returned the 100 Stars to the buyer."
    # Should Telegram also post its refunded_payment message, nothing is taken or said twice.
    telegram.refunded(ALICE, charge_id=CHARGE, total_amount=100, invoice_payload=invoice_payload(STARTER))
    await until_quiet(telegram)
    assert len(sent_to(telegram, ADMIN)) == 1 and await purchased(engine) == 0

    telegram.user_message(ADMIN, ADMIN, text=f"/refund {CHARGE}")
    await telegram.wait_for(lambda: len(sent_to(telegram, ADMIN)) == 2)
    again = sent_to(telegram, ADMIN)[1]["text"]
    assert again == (await engine.refund_payment(telegram_key(CHARGE), by=str(ADMIN))).text
    assert (await engine.refund_payment(telegram_key(CHARGE), by=str(ADMIN))).outcome == "already"
    assert len(telegram.calls_to("refundStarPayment")) == 1 and len(telegram.refunds) == 1
    assert await purchased(engine) == 0


async def test_a_refund_after_purchased_credits_were_spent_tells_the_admin_the_shortfall(run_bot, telegram):
    engine, _ = await run_bot()
    await engine.set_credits(alice(), 0)  # no daily credits left: a job spends purchased ones
    pay(telegram)
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: _has(engine, STARTER.credits - 1))
    # delivered: the credit is spent (while the job runs it is only held, and the admin is told so)
    await telegram.wait_for(lambda: _ended(engine))
    telegram.user_message(ADMIN, ADMIN, text=f"/refund {CHARGE}")
    [told] = await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    assert told["text"] == messages.refund_done(telegram_key(CHARGE), alice().key, 19, 1, str(ADMIN)) \
        + "\nTelegram returned the 100 Stars to the buyer."
    assert await purchased(engine) == 0  # never below zero
    [call] = telegram.calls_to("refundStarPayment")  # Telegram returns all the Stars
    assert call["params"] == {"user_id": ALICE, "telegram_payment_charge_id": CHARGE}


async def test_an_admin_refunds_the_latest_payment_of_the_buyer_replied_to(run_bot, telegram):
    engine, _ = await run_bot()
    pay(telegram, charge="stxOLDER")
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    pay(telegram, BIG, charge="stxNEWER")
    await telegram.wait_for(lambda: len(sent_to(telegram, ALICE)) == 2)
    said = telegram.user_message(GROUP, ALICE, text="hello", push=False)
    telegram.user_message(GROUP, ADMIN, text="/refund", reply_to=said)
    await telegram.wait_for(lambda: sent_to(telegram, GROUP))
    assert [c["params"] for c in telegram.calls_to("refundStarPayment")] == [
        {"user_id": ALICE, "telegram_payment_charge_id": "stxNEWER"}]
    assert await purchased(engine) == STARTER.credits


async def test_a_charge_telegram_refunded_already_is_refunded_here_and_other_errors_change_nothing(
        run_bot, telegram):
    engine, _ = await run_bot()
    pay(telegram)
    pay(telegram, BIG, charge="stxGONE")
    await telegram.wait_for(lambda: len(sent_to(telegram, ALICE)) == 2)
    telegram.charges[CHARGE]["refunded"] = True  # refunded at Telegram; the bot never heard of it
    del telegram.charges["stxGONE"]  # a charge Telegram does not know (CHARGE_NOT_FOUND)
    telegram.user_message(ADMIN, ADMIN, text=f"/refund {CHARGE}")
    [told] = await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    assert told["text"].endswith("taken back.\nTelegram returned the 100 Stars to the buyer.")
    assert await purchased(engine) == BIG.credits  # Starter's credits taken back
    assert (await engine.payment(telegram_key(CHARGE)))["refunded_at"] is not None

    telegram.user_message(ADMIN, ADMIN, text="/refund stxGONE")
    await telegram.wait_for(lambda: len(sent_to(telegram, ADMIN)) == 2)
    refused = sent_to(telegram, ADMIN)[1]["text"]
    assert refused.startswith("Telegram refused the refund") and "\n" not in refused
    assert "charge_not_found" in refused.lower()
    assert await purchased(engine) == BIG.credits
    assert (await engine.payment(telegram_key("stxGONE")))["refunded_at"] is None


async def test_refund_is_for_admins_only_and_needs_a_payment(run_bot, telegram):
    engine, _ = await run_bot()
    pay(telegram)
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    telegram.user_message(BOB, BOB, text=f"/refund {CHARGE}")
    [refused] = await telegram.wait_for(lambda: sent_to(telegram, BOB))
    assert refused["text"] == messages.TELEGRAM_ADMIN_COMMAND_ONLY
    telegram.user_message(ALICE, ALICE, text=f"/refund {CHARGE}")  # not even the buyer
    await telegram.wait_for(lambda: len(sent_to(telegram, ALICE)) == 2)
    assert sent_to(telegram, ALICE)[1]["text"] == messages.TELEGRAM_ADMIN_COMMAND_ONLY
    said = telegram.user_message(GROUP, BOB, text="hi", push=False)  # Bob bought nothing
    telegram.user_message(GROUP, ADMIN, text="/refund", reply_to=said)
    telegram.user_message(ADMIN, ADMIN, text="/refund")
    await telegram.wait_for(lambda: sent_to(telegram, GROUP) and sent_to(telegram, ADMIN))
    assert sent_to(telegram, GROUP)[0]["text"] == messages.TELEGRAM_REFUND_NO_PAYMENT
    assert sent_to(telegram, ADMIN)[0]["text"] == messages.TELEGRAM_REFUND_USAGE
    assert telegram.calls_to("refundStarPayment") == []
    assert await purchased(engine) == STARTER.credits


async def test_a_refund_telegram_made_is_applied_once_and_the_admins_told(run_bot, telegram):
    engine, _ = await run_bot()
    pay(telegram)
    await telegram.wait_for(lambda: sent_to(telegram, ALICE))
    for _ in range(2):  # the service message, and Telegram sending it again
        telegram.refunded(ALICE, charge_id=CHARGE, total_amount=100, invoice_payload=invoice_payload(STARTER))
    await telegram.wait_for(lambda: sent_to(telegram, ADMIN))
    await until_quiet(telegram)
    assert await purchased(engine) == 0
    payment = await engine.payment(telegram_key(CHARGE))
    assert payment["refunded_by"] == "telegram"
    assert len(sent_to(telegram, ADMIN)) == 1
    assert telegram.calls_to("refundStarPayment") == []  # Telegram returned the Stars itself


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
