"""The payments policy (#18) that needs no platform: the invoice payload (what it promises,
within Telegram's 128 bytes, anything else refused), the pre-checkout verdicts, /buy's
text and the out-of-credits answer that offers packs where they are sold."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot import messages
from bot.config import Pack, PaymentsSettings, QuotaSettings, Settings
from bot.credits import Credits
from bot.engine.couriers import Couriers
from bot.engine.payments import Payments
from bot.jobs import Rejected, UserRef
from bot.payments import STARS, discord_key, invoice_payload, payload_promise, telegram_key
from bot.store import open_store
from tests.conftest import effect_request, user

BUYER = UserRef("telegram", "501", "Buyer")
STARTER = Pack("Starter", 50, stars=100, discord_sku="1234567890")
DISCORD_ONLY = Pack("Big", 500, discord_sku="222")


class Shop(Payments):
    def __init__(self, store, packs: list[Pack]):
        self.settings = Settings(quota=QuotaSettings(), payments=PaymentsSettings(packs=packs))
        self.store = store
        self.clock = lambda: 1_767_268_800.0
        self.credits = Credits(store, self.settings.quota, self.clock)
        self.couriers = Couriers()


@pytest.fixture
async def shop(tmp_path):
    store = await open_store(str(tmp_path / "bot.sqlite"))
    yield Shop(store, [STARTER, DISCORD_ONLY])
    await store.close()


# --- the payload ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Starter", "x", "Pack | with bars", "~tilde first", "中" * 32, "😀" * 32,
                                  "😀" * 26 + "a", "\x00" + "😀" * 31, "Ünïcødé ✨ pack"])
def test_a_payload_promises_its_pack_and_fits_in_128_bytes(name):
    for credits, stars in [(1, 1), (1_000_000, 100_000), (50, 0)]:
        payload = invoice_payload(Pack(name, credits, stars=stars))
        assert 1 <= len(payload.encode("utf-8")) <= 128
        assert payload_promise(payload) == (credits, stars, name)


def test_a_short_name_is_readable_in_the_payload():
    assert invoice_payload(STARTER) == "kling1|50|100|Starter"


@pytest.mark.parametrize("payload", [
    "", "Starter", "kling1|50|100", "kling1|50|100|", "kling2|50|100|Starter", "KLING1|50|100|Starter",
    "kling1|-5|100|Starter", "kling1|0|100|Starter", "kling1|050|100|Starter", "kling1|5x|100|Starter",
    "kling1|٥٠|100|Starter", "kling1|²|100|Starter", "kling1|50|1e3|Starter", "kling1| 50|100|Starter",
    "kling1|9999999999|100|Starter", "kling1|50|100|" + "a" * 33, "kling1|50|100|" + "a" * 200,
    "kling1|50|100|~", "kling1|50|100|~not base85 \\", "kling1|50|100|~0000",
    "kling1|50|100|~" + "~" * 105,
])
def test_a_payload_not_made_by_the_bot_promises_nothing(payload):
    assert payload_promise(payload) is None


def test_keys_name_the_platform_and_its_charge():
    assert telegram_key("stxABC") == "telegram:stxABC"
    assert discord_key(1234) == discord_key("1234") == "discord:1234"


# --- pre-checkout ----------------------------------------------------------------------------

async def test_an_invoice_of_a_pack_on_sale_may_be_paid(shop):
    assert await shop.check_purchase(BUYER, invoice_payload(STARTER), STARS, 100) is None


async def test_pre_checkout_refuses_what_does_not_match_the_packs(shop):
    payload = invoice_payload(STARTER)
    assert await shop.check_purchase(BUYER, "someone else's", STARS, 100) == messages.PAYMENT_NOT_OURS
    assert await shop.check_purchase(BUYER, invoice_payload(Pack("Gone", 50, stars=100)), STARS, 100) \
        == messages.PACK_GONE
    assert await shop.check_purchase(BUYER, invoice_payload(replace(STARTER, credits=60)), STARS, 100) \
        == messages.PACK_CHANGED
    assert await shop.check_purchase(BUYER, invoice_payload(replace(STARTER, stars=1)), STARS, 1) \
        == messages.PACK_CHANGED
    assert await shop.check_purchase(BUYER, invoice_payload(DISCORD_ONLY), STARS, 0) \
        == messages.PACK_GONE  # not sold on Telegram
    assert await shop.check_purchase(BUYER, payload, "USD", 100) == messages.PAYMENT_WRONG_CURRENCY
    assert await shop.check_purchase(BUYER, payload, STARS, 99) == messages.PAYMENT_WRONG_AMOUNT
    await shop.store.ban(BUYER.key, at=1.0, by="cli", reason="spam")
    assert await shop.check_purchase(BUYER, payload, STARS, 100) == messages.PAYMENT_BANNED
    assert await shop.check_purchase(UserRef("telegram", "502"), payload, STARS, 100) is None


async def test_pre_checkout_writes_nothing(shop):
    await shop.check_purchase(BUYER, invoice_payload(STARTER), STARS, 100)
    assert await shop.store.user(BUYER.key) is None
    assert (await shop.store.contents())["payments"] == 0


# --- what users read ----------------------------------------------------------------------------

async def test_buy_lists_each_platforms_packs(tmp_path):
    store = await open_store(str(tmp_path / "bot.sqlite"))
    try:
        shop = Shop(store, [STARTER, DISCORD_ONLY])
        assert shop.buy_text("telegram") == messages.BUY_HEADER + "\n- Starter: 50 credits for 100 Stars"
        assert shop.buy_text("discord") == messages.BUY_HEADER + "\n- Starter: 50 credits\n- Big: 500 credits"
        assert shop.buy_text("console") == messages.BUY_NOTHING
        assert shop.out_of_credits_offer("telegram") and not shop.out_of_credits_offer("console")
        assert shop.out_of_credits("telegram", "No credits.") == Rejected("No credits. Or /buy credits.",
                                                                           offer_packs=True)
        assert shop.out_of_credits("console", "No credits.") == Rejected("No credits.")
        assert Shop(store, []).buy_text("telegram") == messages.BUY_NOTHING
    finally:
        await store.close()


async def test_running_out_of_credits_offers_packs_where_they_are_sold(make_engine, settings):
    on_sale = replace(settings, quota=replace(settings.quota, daily_credits=0),
                      payments=PaymentsSettings(packs=[Pack("Test pack", 5, stars=10)]))
    engine = await make_engine(on_sale)
    tester = user(3)
    # the test platform sells nothing: no offer
    refusal = await engine.accept(effect_request(who=tester))
    assert isinstance(refusal, Rejected) and not refusal.offer_packs and "/buy" not in refusal.text
    telegram_user = UserRef("telegram", "9")
    early = await engine.precheck(telegram_user, "effect", None, effect_request().params)
    assert early is not None and early.offer_packs
    assert early.text.startswith("You're out of credits") and early.text.endswith("Or /buy credits.")
    # the accept's own refusal (the locked write's OutOfCredits) offers them too
    late = await engine.accept(effect_request(who=telegram_user))
    assert isinstance(late, Rejected) and late.offer_packs and late.text.endswith("Or /buy credits.")


def test_quota_shows_daily_and_purchased_credits():
    from datetime import UTC, datetime

    from bot.jobs import Balance
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    resets = datetime(2026, 1, 2, tzinfo=UTC)
    text = Balance(3, 2, resets, purchased=40).text(now)
    assert text == ("You have 45 credits: 3 daily, 2 bonus and 40 purchased. "
                    "Daily credits reset at 00:00 UTC (in 12 h 0 min); purchased credits never expire.")
    assert Balance(3, 0, resets).text(now) == "You have 3 credits. Daily credits reset at 00:00 UTC (in 12 h 0 min)."


async def test_the_console_says_where_credits_are_bought(make_engine, tmp_path):
    import io

    from adapters.console import PLATFORM, ConsoleChat, ConsoleCourier
    from tests.helpers import image_bytes
    engine = await make_engine(start=False)
    out = io.StringIO()
    chat = ConsoleChat(engine, ConsoleCourier(out, tmp_path / "videos"), UserRef(PLATFORM, "me"), image_bytes(),
                       out=out)
    await chat.handle("/buy")
    assert out.getvalue().strip() == messages.BUY_ELSEWHERE
