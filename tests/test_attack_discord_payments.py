"""Attacks on Discord's premium-app payments (#18), as a hostile user and as an unlucky
operator would make them, through the real discord.py client on the fake Discord
(tests/fake_discord.py; the helpers of tests/test_discord_payments.py).

What the bot credits: an entitlement of a user (not a server's), of a pack's SKU, not
deleted, not ended, of a one-time kind: PURCHASE, and TEST_MODE_PURCHASE too (the store's
test mode, which a developer uses to try the packs before selling them: credited like a
purchase, and the ledger keeps the entitlement's type). A subscription's entitlement
(APPLICATION_SUBSCRIPTION, PREMIUM_SUBSCRIPTION) is never a pack bought, even on an SKU
an operator wrongly made a pack's: nothing credited, nothing consumed.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from bot import messages
from bot.config import ConfigError, Pack, PaymentsSettings, load_settings
from bot.jobs import UserRef
from bot.payments import Purchase, discord_key
from tests import test_discord_experience as experience
from tests import test_discord_payments as pay
from tests.backends import raw_sql
from tests.fake_discord import APP_ID, PURCHASE, TEST_MODE_PURCHASE

front, pay_settings = pay.front, pay.pay_settings  # fixtures
fake_discord, dc_settings = pay.fake_discord, pay.dc_settings
until, callbacks, feed = pay.until, pay.callbacks, pay.feed
consume_calls, consumed_in_ledger, dms, listings, handled, admin_posts = (
    pay.consume_calls, pay.consumed_in_ledger, pay.dms, pay.listings, pay.handled, pay.admin_posts)
ALICE, BOB, ADMIN, SKU, BIG_SKU, ALICE_REF = pay.ALICE, pay.BOB, pay.ADMIN, pay.SKU, pay.BIG_SKU, pay.ALICE_REF
APPLICATION_SUBSCRIPTION, PREMIUM_SUBSCRIPTION = 8, 2
GUILD = 800000000000000001


def made(fake, user, sku, *, kind=PURCHASE, consumable=True, **fields):
    """An entitlement the fake holds (not dispatched), with ``fields`` over the usual ones."""
    if consumable:
        fake.consumable_skus.add(sku)
    entitlement = fake._entitlement(user, sku, kind)
    entitlement.update(fields)
    return entitlement


async def nothing_credited(engine, fake, entitlement, user=ALICE_REF):
    assert await engine.payment(discord_key(entitlement["id"])) is None
    assert (await engine.balance(user)).purchased == 0
    assert consume_calls(fake, entitlement) == [] and not fake.entitlements[int(entitlement["id"])]["consumed"]
    assert dms(fake, int(user.user_id)) == []


# --- entitlements that are not the bot's to credit ------------------------------------------------

@pytest.mark.parametrize("fields", [
    {"sku_id": "1300000000000000999"},  # another SKU (no pack's)
    {"user_id": None, "guild_id": str(GUILD)},  # a server's entitlement
    {"deleted": True},  # deleted already
    {"ends_at": "2020-01-01T00:00:00+00:00", "starts_at": "2019-12-01T00:00:00+00:00"},  # ended
    {"type": APPLICATION_SUBSCRIPTION},  # a subscription on a pack's SKU (an operator's mistake)
    {"type": PREMIUM_SUBSCRIPTION},
], ids=["other-sku", "guild", "deleted", "ended", "app-subscription", "premium-subscription"])
async def test_an_entitlement_not_a_pack_bought_credits_nothing(front, fake_discord, fields):
    engine, adapter = await front()
    consumable = fields.get("type") not in (APPLICATION_SUBSCRIPTION, PREMIUM_SUBSCRIPTION)
    entitlement = made(fake_discord, ALICE, SKU, consumable=consumable, **fields)
    await handled(adapter, "entitlement_create", lambda: fake_discord.dispatch("ENTITLEMENT_CREATE", entitlement))
    # and the same entitlement carried on the user's interaction
    payload = fake_discord.slash("quota", [], user=ALICE, entitlements=[entitlement])
    feed(adapter, payload)
    await until(lambda: callbacks(fake_discord, payload["token"]))
    await asyncio.sleep(0.2)
    await nothing_credited(engine, fake_discord, entitlement)


async def test_not_ours_at_the_start_scan_either(front, fake_discord):
    entitlements = [made(fake_discord, ALICE, SKU, ends_at="2020-01-01T00:00:00+00:00"),
                    made(fake_discord, BOB, BIG_SKU, type=APPLICATION_SUBSCRIPTION, consumable=False)]
    engine, _ = await front()
    assert listings(fake_discord)
    for entitlement in entitlements:
        await nothing_credited(engine, fake_discord, entitlement, UserRef("discord", entitlement["user_id"]))


async def test_a_test_mode_purchase_is_credited_and_says_so_in_the_ledger(front, fake_discord):
    engine, _ = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU, test=True)
    payment = await until(lambda: consumed_in_ledger(engine, entitlement))
    assert payment["details"]["entitlement_type"] == TEST_MODE_PURCHASE
    assert (await engine.balance(ALICE_REF)).purchased == 50


@pytest.mark.parametrize("fields", [{"user_id": None, "guild_id": str(GUILD)}, {"type": APPLICATION_SUBSCRIPTION}],
                         ids=["guild", "subscription"])
async def test_an_entitlement_never_ours_deleted_tells_the_admins_nothing(front, fake_discord, fields):
    engine, adapter = await front()
    entitlement = made(fake_discord, ALICE, SKU, deleted=True, **fields)
    await handled(adapter, "entitlement_delete", lambda: fake_discord.dispatch("ENTITLEMENT_DELETE", entitlement))
    assert admin_posts(fake_discord) == []
    assert await engine.payment(discord_key(entitlement["id"])) is None


# --- replays ------------------------------------------------------------------------------------

async def test_the_same_purchase_delivered_many_times_at_once_credits_once(front, fake_discord):
    engine, _ = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    await asyncio.gather(*(fake_discord.dispatch("ENTITLEMENT_CREATE", entitlement) for _ in range(12)))
    await until(lambda: len(consume_calls(fake_discord, entitlement)) == 12)
    await until(lambda: consumed_in_ledger(engine, entitlement))
    await asyncio.sleep(0.2)
    assert fake_discord.consumes == [int(entitlement["id"])]
    assert (await engine.balance(ALICE_REF)).purchased == 50
    assert len(await until(lambda: dms(fake_discord, ALICE))) == 1


async def test_an_entitlement_update_of_a_purchase_credits_it_once(front, fake_discord):
    """ENTITLEMENT_UPDATE (Discord documents it for subscriptions; a purchase's may come):
    an unconsumed pack entitlement is the purchase, credited once, whichever event said so."""
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)  # its CREATE went astray
    await handled(adapter, "entitlement_update", lambda: fake_discord.dispatch("ENTITLEMENT_UPDATE", entitlement))
    await until(lambda: consumed_in_ledger(engine, entitlement))
    await handled(adapter, "entitlement_update", lambda: fake_discord.dispatch("ENTITLEMENT_UPDATE", entitlement))
    await handled(adapter, "entitlement_create", lambda: fake_discord.dispatch("ENTITLEMENT_CREATE", entitlement))
    assert fake_discord.consumes == [int(entitlement["id"])]
    assert (await engine.balance(ALICE_REF)).purchased == 50 and len(dms(fake_discord, ALICE)) == 1


async def test_an_entitlement_update_that_deletes_a_purchase_refunds_it_once(front, fake_discord):
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU)
    await until(lambda: consumed_in_ledger(engine, entitlement))
    gone = dict(entitlement, deleted=True)
    await handled(adapter, "entitlement_update", lambda: fake_discord.dispatch("ENTITLEMENT_UPDATE", gone))
    assert (await engine.balance(ALICE_REF)).purchased == 0
    await handled(adapter, "entitlement_delete", lambda: fake_discord.dispatch("ENTITLEMENT_DELETE", gone))
    assert (await engine.payment(discord_key(entitlement["id"])))["refunded_by"] == "discord"
    assert len(await until(lambda: admin_posts(fake_discord))) == 1


async def test_a_purchase_after_its_refund_credits_nothing_across_replays(front, fake_discord):
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    await handled(adapter, "entitlement_delete", lambda: fake_discord.refund(int(entitlement["id"])))
    alive = dict(entitlement, deleted=False)
    for event in ("ENTITLEMENT_CREATE", "ENTITLEMENT_UPDATE", "ENTITLEMENT_CREATE"):
        await handled(adapter, event.lower(), lambda e=event: fake_discord.dispatch(e, alive))
    payload = fake_discord.slash("quota", [], user=ALICE, entitlements=[alive])
    feed(adapter, payload)
    await until(lambda: callbacks(fake_discord, payload["token"]))
    await asyncio.sleep(0.2)
    assert (await engine.balance(ALICE_REF)).purchased == 0 and dms(fake_discord, ALICE) == []
    assert len(admin_posts(fake_discord)) == 1  # the refund, once


@pytest.mark.both_backends
async def test_two_processes_on_one_database_credit_consume_and_tell_once(front, fake_discord):
    first, _ = await front()
    second, _ = await front()  # the same settings: the same database, both on the gateway
    entitlement = await fake_discord.purchase(ALICE, SKU)
    await until(lambda: len(consume_calls(fake_discord, entitlement)) == 2)
    await until(lambda: consumed_in_ledger(first, entitlement))
    await asyncio.sleep(0.3)
    assert fake_discord.consumes == [int(entitlement["id"])]
    assert (await first.balance(ALICE_REF)).purchased == 50 == (await second.balance(ALICE_REF)).purchased
    assert len(await until(lambda: dms(fake_discord, ALICE))) == 1
    assert await raw_sql(first.store, "select entry, purchased_delta from ledger where purchased_delta != 0") == [
        {"entry": "purchase", "purchased_delta": 50}]

    # Discord's refund reaches both: taken back once, the admin channel told once
    await fake_discord.refund(int(entitlement["id"]))
    await until(lambda: admin_posts(fake_discord))
    await asyncio.sleep(0.3)
    assert len(admin_posts(fake_discord)) == 1
    assert (await second.balance(ALICE_REF)).purchased == 0
    assert [row["purchased_delta"] for row in await raw_sql(
        first.store, "select purchased_delta from ledger where purchased_delta != 0 order by id")] == [50, -50]


# --- restart windows ----------------------------------------------------------------------------

async def test_a_crash_after_consume_before_the_ledger_noted_it_is_noted_at_the_next_start(front, fake_discord):
    """The process credited and consumed, then died before ``mark_consumed``: the start scan
    sees the entitlement consumed at Discord and notes it in the ledger (the stats say so)."""
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    fake_discord.entitlements[int(entitlement["id"])]["consumed"] = True  # consumed at Discord, then the crash
    engine, adapter = await front()
    # what the process that died wrote: the credit (before the consume)
    await engine.credit_purchase(Purchase(discord_key(entitlement["id"]), ALICE_REF, "Small", 50, sku_id=str(SKU)))
    await adapter.stop()
    await engine.close()

    engine, _ = await front()
    payment = await until(lambda: consumed_in_ledger(engine, entitlement))
    assert payment["credits"] == 50 and (await engine.balance(ALICE_REF)).purchased == 50
    assert consume_calls(fake_discord, entitlement) == []


async def test_a_start_scan_that_fails_is_tried_again_soon(front, adapter_runner, fake_discord, pay_settings, caplog):
    """The listing fails at start (a 503: discord.py tries no more): no READY may come for
    hours, so the bot tries the scan again by itself; purchases made while it was down are
    credited."""
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    fake_discord.refuse_listing = [(503, {"message": "Service Unavailable", "code": 0})] * 2
    engine, adapter = await adapter_runner(pay_settings, QuickRetryAdapter)
    await until(lambda: consumed_in_ledger(engine, entitlement))
    assert caplog.text.count("could not list the entitlements") == 2
    assert len(listings(fake_discord)) == 3 and adapter.purchases.scanned
    assert (await engine.balance(ALICE_REF)).purchased == 50


class QuickRetryAdapter(pay.QuickReadyAdapter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.purchases.retry_delay = 0.05


async def test_a_start_scan_meeting_a_server_error_once_lists_again(front, fake_discord):
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    fake_discord.refuse_listing = [(500, {"message": "Internal Server Error", "code": 0})]  # discord.py retries
    engine, _ = await front()
    await until(lambda: consumed_in_ledger(engine, entitlement))
    assert len(listings(fake_discord)) == 2


async def test_a_start_scan_rate_limited_waits_and_lists(front, fake_discord):
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    fake_discord.refuse_listing = [(429, {"message": "You are being rate limited.", "retry_after": 0.3,
                                          "global": False})]
    engine, _ = await front()
    await until(lambda: consumed_in_ledger(engine, entitlement))
    assert len(listings(fake_discord)) == 2  # refused once, then listed


async def test_a_start_scan_pages_through_many_entitlements(front, fake_discord):
    """Discord gives at most 100 a page: 230 purchases made while the bot was down (each by
    its own user: one unconsumed per user and SKU), every one credited at start."""
    users = [900000000000000000 + n for n in range(230)]
    bought = [await fake_discord.purchase(user, SKU if n % 2 else BIG_SKU, dispatch=False)
              for n, user in enumerate(users)]
    for entitlement in bought[::3]:
        entitlement["consumed"] = True  # consumed long ago (credited then)
    engine, _ = await front()
    await until(lambda: len(fake_discord.consumes) == len([e for e in bought if e["id"] not in
                                                           {b["id"] for b in bought[::3]}]), timeout=60)
    pages = listings(fake_discord)
    assert len(pages) == 3 and all(int(page["query"]["limit"]) <= 100 for page in pages)
    assert [page["query"].get("after") for page in pages][1:] == [bought[99]["id"], bought[199]["id"]]
    unconsumed = [e for n, e in enumerate(bought) if n % 3]
    for entitlement in unconsumed[:: 17]:
        assert await until(lambda e=entitlement: consumed_in_ledger(engine, e))


# --- interactions carrying entitlements ----------------------------------------------------------

async def test_an_interaction_carrying_another_users_purchase_credits_that_user(front, fake_discord):
    engine, adapter = await front()
    alices = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    payload = fake_discord.slash("quota", [], user=BOB, entitlements=[alices])
    feed(adapter, payload)
    await until(lambda: consumed_in_ledger(engine, alices))
    assert (await engine.balance(ALICE_REF)).purchased == 50
    assert (await engine.balance(UserRef("discord", str(BOB)))).purchased == 0
    assert len(await until(lambda: dms(fake_discord, ALICE))) == 1 and dms(fake_discord, BOB) == []


async def test_an_interaction_carrying_a_consumed_purchase_credits_nothing(front, fake_discord):
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    entitlement["consumed"] = True
    payload = fake_discord.slash("quota", [], user=ALICE, entitlements=[entitlement])
    feed(adapter, payload)
    await until(lambda: callbacks(fake_discord, payload["token"]))
    await asyncio.sleep(0.2)
    assert await engine.payment(discord_key(entitlement["id"])) is None
    assert (await engine.balance(ALICE_REF)).purchased == 0 and consume_calls(fake_discord, entitlement) == []


# --- /refund --------------------------------------------------------------------------------------

async def refund_answer(fake, adapter, options, *, user=ADMIN, **kw):
    payload = fake.slash("refund", options, user=user, **kw)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake, payload["token"]))
    return answer["data"]["content"]


async def test_refund_by_a_non_admin_naming_a_member_changes_nothing(front, fake_discord):
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU)
    await until(lambda: consumed_in_ledger(engine, entitlement))
    text = await refund_answer(fake_discord, adapter, [{"name": "user", "type": 6, "value": str(ALICE)}],
                               user=BOB, users=[ALICE])
    assert text == messages.ADMINS_ONLY and (await engine.balance(ALICE_REF)).purchased == 50


@pytest.mark.parametrize("value", [
    "telegram:123456", "discord:", " ", "１２３", "²", "٣٣٣", "12 34", "-5", "9" * 5000, "discord:12; drop table",
])
async def test_refund_refuses_what_is_no_discord_payment_id(front, fake_discord, value):
    engine, adapter = await front()
    text = await refund_answer(fake_discord, adapter, [{"name": "payment", "type": 3, "value": value}])
    assert text == messages.DISCORD_PAYMENT_ID_INVALID


async def test_refund_twice_takes_back_once_and_the_admin_channel_hears_nothing(front, fake_discord):
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU)
    await until(lambda: consumed_in_ledger(engine, entitlement))
    options = [{"name": "payment", "type": 3, "value": entitlement["id"]}]
    first = await refund_answer(fake_discord, adapter, options)
    second = await refund_answer(fake_discord, adapter, options)
    assert first.endswith(messages.DISCORD_MONEY_BACK)
    assert second.startswith(messages.refund_already(discord_key(entitlement["id"])))
    assert (await engine.balance(ALICE_REF)).purchased == 0
    # then Discord's own refund of it: already refunded, no one told again
    await handled(adapter, "entitlement_delete", lambda: fake_discord.refund(int(entitlement["id"])))
    assert admin_posts(fake_discord) == []


async def test_refund_of_a_member_without_discord_payments_says_none(front, fake_discord):
    engine, adapter = await front()
    await engine.credit_purchase(Purchase("telegram:abc", UserRef("telegram", "42"), "Small", 50))
    text = await refund_answer(fake_discord, adapter, [{"name": "user", "type": 6, "value": str(BOB)}],
                               users=[BOB])
    assert text == messages.no_payment_to_refund(f"<@{BOB}>")


# --- premium buttons ------------------------------------------------------------------------------

def test_config_refuses_more_discord_packs_than_buttons_fit(tmp_path):
    """Five rows of five premium buttons at most on a message: a 26th Discord pack would be
    listed by /buy without its button (unbuyable). Telegram-only packs are not counted."""
    def packs(discord: int, telegram: int = 0) -> str:
        return "".join(f'[[payments.packs]]\nname = "Pack {n}"\ncredits = 10\n'
                       f'discord_sku = "{1300000000000000100 + n}"\n' for n in range(discord)) + "".join(
            f'[[payments.packs]]\nname = "Stars {n}"\ncredits = 10\nstars = 5\n' for n in range(telegram))
    path = tmp_path / "c.toml"
    path.write_text(packs(25, telegram=10))
    assert len(load_settings(path, env={}).payments.sold_on("discord")) == 25
    path.write_text(packs(30))
    with pytest.raises(ConfigError, match="25"):
        load_settings(path, env={})


async def test_twenty_five_packs_make_five_rows_of_five_premium_buttons(front, fake_discord, pay_settings):
    packs = [Pack(f"Pack {n}", 10, discord_sku=str(1300000000000000100 + n)) for n in range(25)]
    _, adapter = await front(replace(pay_settings, payments=PaymentsSettings(packs=packs)))
    payload = fake_discord.slash("buy", [], user=ALICE)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    rows = answer["data"]["components"]
    assert [len(row["components"]) for row in rows] == [5] * 5
    assert [b["sku_id"] for row in rows for b in row["components"]] == [pack.discord_sku for pack in packs]
    assert all(set(b) <= {"type", "style", "sku_id", "disabled"} for row in rows for b in row["components"])
    # (the autouse spec check asserts the fake saw no request Discord refuses)


@pytest.mark.parametrize("custom_id", ["kling:buy:Small", f"premium:{SKU}", "kling:again:1:buy", str(SKU)])
async def test_forged_custom_ids_under_a_video_reach_no_payment(front, fake_discord, custom_id):
    engine, adapter = await front()
    _, message = await experience.delivered(fake_discord, adapter)
    before = await engine.balance(UserRef("discord", str(BOB)))
    payload = experience.press(fake_discord, adapter, message, custom_id, user=BOB)
    await asyncio.sleep(0.3)
    assert await engine.store.payments_since(0) == []
    assert (await engine.balance(UserRef("discord", str(BOB)))).purchased == before.purchased == 0
    assert fake_discord.consumes == [] and not fake_discord.to(f"/applications/{APP_ID}/entitlements", "GET")[1:]
    del payload

