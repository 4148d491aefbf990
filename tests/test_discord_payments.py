"""Discord's premium apps through the real discord.py client: the fake gateway sends
ENTITLEMENT_CREATE and ENTITLEMENT_DELETE, the fake REST API lists and consumes
entitlements (tests/fake_discord.py, checked against the OpenAPI document).

A purchase is credited once and consumed once: across an event delivered twice, and
across a restart between crediting and consuming (the start scan finds it). /buy and
out-of-credits refusals carry one premium button per pack; Discord's refunds take the
credits back once and tell the admin channel; /refund is for admins.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import discord
import pytest

from adapters.discord import DiscordAdapter
from bot import messages
from bot.config import Pack, PaymentsSettings, QuotaSettings
from bot.jobs import UserRef
from bot.payments import discord_key
from tests import spec_check
from tests import test_discord as base
from tests import test_discord_experience as experience
from tests.fake_discord import APP_ID, PURCHASE

TOKEN, ALICE, BOB = base.TOKEN, base.ALICE, base.BOB
fake_discord, dc_settings, until, callbacks, feed = (base.fake_discord, base.dc_settings, base.until,
                                                      base.callbacks, base.feed)
SKU, BIG_SKU = 1300000000000000001, 1300000000000000002
ADMIN = 600000000000000009
ADMIN_CHANNEL = 700000000000000042
PACKS = [Pack("Small", 50, stars=100, discord_sku=str(SKU)), Pack("Big", 200, stars=300, discord_sku=str(BIG_SKU)),
         Pack("Stars only", 10, stars=20)]
ALICE_REF = UserRef("discord", str(ALICE))


@pytest.fixture
def pay_settings(dc_settings, fake_discord):
    return replace(dc_settings, payments=PaymentsSettings(packs=PACKS),
                   discord=replace(dc_settings.discord, gateway_url=fake_discord.gateway_url, admins=[ADMIN],
                                   admin_channel=ADMIN_CHANNEL))


class QuickReadyAdapter(DiscordAdapter):
    """The bot as it runs, but ready 50 ms after the last server arrives, not discord.py's 2 s
    (the fake sends every server at once)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.client._connection.guild_ready_timeout = 0.05


@pytest.fixture
async def front(adapter_runner, pay_settings):
    """Start an engine and the Discord bot on the fake gateway; ready, its start scan done."""
    original = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.http.Route.BASE

    async def start(settings=None):
        engine, adapter = await adapter_runner(settings or pay_settings, QuickReadyAdapter)
        await until(lambda: adapter.client.is_ready() and adapter.purchases.scanned)
        return engine, adapter

    yield start
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.http.Route.BASE = original


def consume_calls(fake, entitlement):
    return fake.to(f"/applications/{APP_ID}/entitlements/{entitlement['id']}/consume", "POST")


async def consumed_in_ledger(engine, entitlement):
    payment = await engine.payment(discord_key(entitlement["id"]))
    return payment if payment is not None and payment["consumed_at"] is not None else None


def dms(fake, user):
    return [c["json"]["content"] for c in fake.to("/messages", "POST") if c["path"].startswith("/api/v10/channels/")
            and fake.dm_channels.get(int(c["path"].split("/")[4])) == user]


def listings(fake):
    path = f"/api/v10/applications/{APP_ID}/entitlements"
    return [c for c in fake.calls if c["method"] == "GET" and c["path"] == path]


async def handled(adapter, event, send):
    """Send a gateway event and wait until the bot's handler of it has finished."""
    seen = asyncio.ensure_future(adapter.client.wait_for(event))
    await send()
    await seen  # discord.py schedules its on_<event> task before it resolves a waiter
    await until(lambda: not [task for task in asyncio.all_tasks()
                             if task.get_name() == f"discord.py: on_{event}" and not task.done()])


def admin_posts(fake):
    return [c["json"]["content"] for c in fake.to(f"/channels/{ADMIN_CHANNEL}/messages", "POST")]


async def test_a_purchase_is_credited_once_consumed_once_and_the_buyer_told(front, fake_discord):
    engine, _ = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU)

    payment = await until(lambda: consumed_in_ledger(engine, entitlement))
    assert fake_discord.consumes == [int(entitlement["id"])] and len(consume_calls(fake_discord, entitlement)) == 1
    assert fake_discord.entitlements[int(entitlement["id"])]["consumed"] is True
    assert (payment["pack"], payment["credits"], payment["sku_id"]) == ("Small", 50, str(SKU))
    balance = await engine.balance(ALICE_REF)
    assert balance.purchased == 50 and balance.total == 10 + 50
    [told] = await until(lambda: dms(fake_discord, ALICE))
    assert "50" in told


async def test_the_same_event_delivered_twice_credits_once(front, fake_discord):
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    for _ in range(2):  # Discord delivers at least once: the same event again, while the first is handled
        await fake_discord.dispatch("ENTITLEMENT_CREATE", entitlement)
    await until(lambda: len(consume_calls(fake_discord, entitlement)) == 2)
    await until(lambda: consumed_in_ledger(engine, entitlement))

    # The second consume met a consumed entitlement: Discord was asked, and it counts as consumed.
    assert fake_discord.consumes == [int(entitlement["id"])]
    # waited for: the second handler asks after its consume was refused, maybe after the ledger's note
    assert await until(lambda: fake_discord.to(f"/applications/{APP_ID}/entitlements/{entitlement['id']}", "GET"))
    assert (await engine.balance(ALICE_REF)).purchased == 50
    assert len(await until(lambda: dms(fake_discord, ALICE))) == 1


async def test_a_restart_before_consume_credits_once_and_consumes_once(front, fake_discord, caplog):
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    fake_discord.refuse_consume[int(entitlement["id"])] = [(403, {"code": 50001, "message": "Missing Access"})]
    await fake_discord.dispatch("ENTITLEMENT_CREATE", entitlement)
    await until(lambda: consume_calls(fake_discord, entitlement))
    await until(lambda: "tried again at the next start" in caplog.text)
    await until(lambda: dms(fake_discord, ALICE))  # told once credited (after the consume's attempt)
    assert fake_discord.consumes == [] and (await engine.balance(ALICE_REF)).purchased == 50
    payment = await engine.payment(discord_key(entitlement["id"]))
    assert payment is not None and payment["consumed_at"] is None
    await adapter.stop()
    await engine.close()

    # A new process: its first READY lists the entitlements not ended and finds this one unconsumed.
    engine, _ = await front()
    await until(lambda: consumed_in_ledger(engine, entitlement))
    [_, listed] = listings(fake_discord)  # each process's start scan
    assert listed["query"]["exclude_ended"] in spec_check.TRUE_WORDS
    assert set(listed["query"]["sku_ids"].split(",")) == {str(SKU), str(BIG_SKU)}
    assert fake_discord.consumes == [int(entitlement["id"])]
    assert (await engine.balance(ALICE_REF)).purchased == 50  # credited once
    assert len(dms(fake_discord, ALICE)) == 1  # told once, when it was credited


async def test_purchases_made_while_the_bot_was_down_are_credited_at_start(front, fake_discord):
    early = await fake_discord.purchase(ALICE, BIG_SKU, dispatch=False)
    other = await fake_discord.purchase(BOB, 1300000000000000999, dispatch=False)  # no pack of ours
    engine, _ = await front()
    await until(lambda: consumed_in_ledger(engine, early))
    assert (await engine.balance(ALICE_REF)).purchased == 200
    assert fake_discord.consumes == [int(early["id"])]
    assert await engine.payment(discord_key(other["id"])) is None and not other["consumed"]


async def test_an_unconsumed_purchase_an_interaction_carries_is_credited_once(front, fake_discord):
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)  # its event went astray
    for _ in range(2):
        payload = fake_discord.slash("quota", [], user=ALICE, entitlements=[entitlement])
        feed(adapter, payload)
        await until(lambda p=payload: callbacks(fake_discord, p["token"]))
    await until(lambda: consumed_in_ledger(engine, entitlement))
    assert fake_discord.consumes == [int(entitlement["id"])]
    assert (await engine.balance(ALICE_REF)).purchased == 50


async def test_buy_shows_one_premium_button_per_discord_pack(front, fake_discord):
    engine, adapter = await front()
    payload = fake_discord.slash("buy", [], user=ALICE)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["type"] == 4 and answer["data"]["flags"] & 64  # ephemeral
    assert answer["data"]["content"] == engine.buy_text("discord")
    [row] = answer["data"]["components"]
    assert [{k: v for k, v in b.items() if k != "disabled"} for b in row["components"]] == [
        {"type": 2, "style": 6, "sku_id": str(SKU)}, {"type": 2, "style": 6, "sku_id": str(BIG_SKU)}]
    # (the autouse spec check asserts the fake saw no request Discord refuses)


async def test_buy_without_discord_packs_shows_no_buttons(front, fake_discord, pay_settings):
    settings = replace(pay_settings, payments=PaymentsSettings(packs=[Pack("Stars only", 10, stars=20)]))
    engine, adapter = await front(settings)
    payload = fake_discord.slash("buy", [], user=ALICE)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["data"]["content"] == engine.buy_text("discord") and not answer["data"].get("components")


async def test_buy_offers_a_banned_user_nothing_to_pay_for(front, fake_discord):
    engine, adapter = await front()
    await engine.ban(ALICE_REF.key, "test", "spam")
    payload = fake_discord.slash("buy", [], user=ALICE)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["data"]["content"] == messages.PAYMENT_BANNED and not answer["data"].get("components")


async def test_an_out_of_credits_refusal_offers_the_packs(front, fake_discord, pay_settings):
    settings = replace(pay_settings, quota=QuotaSettings(daily_credits=0))
    _, adapter = await front(settings)
    payload = base.effect_payload(fake_discord, user=BOB)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["type"] == 4 and answer["data"]["flags"] & 64
    [row] = answer["data"]["components"]
    assert [b["sku_id"] for b in row["components"]] == [str(SKU), str(BIG_SKU)]
    assert all(b["style"] == 6 and "label" not in b and "custom_id" not in b for b in row["components"])


async def test_an_out_of_credits_press_under_a_video_offers_the_packs(front, fake_discord):
    engine, adapter = await front()
    _, message = await experience.delivered(fake_discord, adapter)
    await engine.set_credits(UserRef("discord", str(BOB)), 0)
    press = experience.press(fake_discord, adapter, message, "kling:again:1", user=BOB)
    [refusal] = await until(lambda: [c["data"] for c in callbacks(fake_discord, press["token"])])
    assert refusal["flags"] & 64 and refusal["content"].startswith("You're out of credits")
    assert [b["sku_id"] for row in refusal["components"] for b in row["components"]] == [str(SKU), str(BIG_SKU)]


async def test_a_discord_refund_takes_the_credits_back_once_and_tells_the_admins(front, fake_discord, pay_settings):
    settings = replace(pay_settings, quota=QuotaSettings(daily_credits=0))
    engine, adapter = await front(settings)
    entitlement = await fake_discord.purchase(ALICE, SKU)
    await until(lambda: consumed_in_ledger(engine, entitlement))
    # One credit of the 50 is spent on a video (no daily credits: it comes from the purchased ones).
    payload = base.effect_payload(fake_discord, user=ALICE)
    feed(adapter, payload)
    await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST") if c["files"]])
    await until(lambda: _ended(engine))  # delivered and committed: its credit is spent, not held
    spent = 50 - (await engine.balance(ALICE_REF)).purchased
    assert spent >= 1

    await fake_discord.refund(int(entitlement["id"]))
    refunded = await until(lambda: _refunded(engine, entitlement))
    assert (refunded["refunded_credits"], refunded["refund_short"], refunded["refunded_by"]) == (
        50 - spent, spent, "discord")
    assert (await engine.balance(ALICE_REF)).purchased == 0
    [alert] = await until(lambda: admin_posts(fake_discord))
    assert alert == messages.refund_done(discord_key(entitlement["id"]), ALICE_REF.key, 50 - spent, spent,
                                         "discord")  # with the shortfall in words

    await handled(adapter, "entitlement_delete", lambda: fake_discord.dispatch(
        "ENTITLEMENT_DELETE", fake_discord.entitlements[int(entitlement["id"])]))  # delivered again
    again = await engine.payment(discord_key(entitlement["id"]))
    assert again["refunded_credits"] == 50 - spent and (await engine.balance(ALICE_REF)).purchased == 0
    assert len(admin_posts(fake_discord)) == 1


async def _ended(engine) -> bool:
    """Alice's jobs have all ended (a delivered one's credits are spent)."""
    return not await engine.store.user_jobs(ALICE_REF.key, active_only=True)


async def test_a_refund_that_arrives_before_its_purchase_credits_nothing_later(front, fake_discord):
    """Events out of order (or handled by two shards): ENTITLEMENT_DELETE first, then the
    ENTITLEMENT_CREATE of the same entitlement. The refunded purchase never becomes credits."""
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU, dispatch=False)
    await handled(adapter, "entitlement_delete", lambda: fake_discord.refund(int(entitlement["id"])))
    payment = await engine.payment(discord_key(entitlement["id"]))
    assert payment is not None and payment["refunded_at"] is not None and payment["credits"] == 0
    await handled(adapter, "entitlement_create", lambda: fake_discord.dispatch(
        "ENTITLEMENT_CREATE", dict(fake_discord.entitlements[int(entitlement["id"])], deleted=False)))
    assert (await engine.balance(ALICE_REF)).purchased == 0
    assert dms(fake_discord, ALICE) == []


async def _refunded(engine, entitlement):
    payment = await engine.payment(discord_key(entitlement["id"]))
    return payment if payment is not None and payment["refunded_at"] is not None else None


async def test_refund_by_an_admin_names_the_payment_or_the_member(front, fake_discord):
    engine, adapter = await front()
    first = await fake_discord.purchase(ALICE, SKU)
    await until(lambda: consumed_in_ledger(engine, first))
    second = await fake_discord.purchase(ALICE, BIG_SKU)
    await until(lambda: consumed_in_ledger(engine, second))

    by_id = fake_discord.slash("refund", [{"name": "payment", "type": 3, "value": first["id"]}], user=ADMIN)
    feed(adapter, by_id)
    [answer] = await until(lambda: callbacks(fake_discord, by_id["token"]))
    assert answer["data"]["flags"] & 64 and answer["data"]["content"].endswith(messages.DISCORD_MONEY_BACK)
    assert (await _refunded(engine, first))["refunded_by"] == str(ADMIN)
    assert (await engine.balance(ALICE_REF)).purchased == 200

    by_member = fake_discord.slash("refund", [{"name": "user", "type": 6, "value": str(ALICE)}], user=ADMIN,
                                   users=[ALICE])
    feed(adapter, by_member)
    [answer] = await until(lambda: callbacks(fake_discord, by_member["token"]))
    assert answer["data"]["content"].endswith(messages.DISCORD_MONEY_BACK)
    assert (await _refunded(engine, second))["refunded_by"] == str(ADMIN)
    assert (await engine.balance(ALICE_REF)).purchased == 0


async def test_a_refund_that_took_nothing_says_so_and_not_that_it_took_the_credits_back(front, fake_discord):
    """An unknown entitlement id, or a payment refunded before: the answer says nothing was
    refunded, without the line about Discord's money that follows a refund made now."""
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU)
    await until(lambda: consumed_in_ledger(engine, entitlement))
    answers = []
    for value in ("987654321", entitlement["id"], entitlement["id"]):
        payload = fake_discord.slash("refund", [{"name": "payment", "type": 3, "value": value}], user=ADMIN)
        feed(adapter, payload)
        [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))  # noqa: B023
        answers.append(answer["data"]["content"])
    unknown, done, again = answers
    assert unknown == messages.refund_unknown(discord_key("987654321"))
    assert done.endswith(messages.DISCORD_MONEY_BACK)
    assert again == messages.refund_already(discord_key(entitlement["id"]))
    assert (await engine.balance(ALICE_REF)).purchased == 0


@pytest.mark.parametrize("options, expected", [
    ([], messages.DISCORD_REFUND_WHICH),
    ([{"name": "payment", "type": 3, "value": "not-a-number"}], messages.DISCORD_PAYMENT_ID_INVALID),
])
async def test_refund_says_which_payment_it_needs(front, fake_discord, options, expected):
    _, adapter = await front()
    payload = fake_discord.slash("refund", options, user=ADMIN)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["data"]["content"] == expected


async def test_refund_is_refused_to_a_member_who_is_not_an_admin(front, fake_discord):
    engine, adapter = await front()
    entitlement = await fake_discord.purchase(ALICE, SKU)
    await until(lambda: consumed_in_ledger(engine, entitlement))
    payload = fake_discord.slash("refund", [{"name": "payment", "type": 3, "value": entitlement["id"]}], user=BOB)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["data"]["content"] == messages.ADMINS_ONLY
    assert (await _refunded(engine, entitlement)) is None and (await engine.balance(ALICE_REF)).purchased == 50


# --- the fake is as strict as Discord -------------------------------------------------------------

def _callback_problems(button):
    body = {"type": 4, "data": {"content": "Buy", "components": [{"type": 1, "components": [button]}]}}
    return spec_check.DiscordRules().problems("POST", "/interactions/1/token/callback", body, [])


def test_the_fake_accepts_a_premium_button_as_discord_does():
    assert _callback_problems({"type": 2, "style": 6, "sku_id": str(SKU)}) == []


@pytest.mark.parametrize("button, field", [
    ({"type": 2, "style": 6, "sku_id": str(SKU), "custom_id": "buy"}, "custom_id"),
    ({"type": 2, "style": 6, "sku_id": str(SKU), "label": "Buy"}, "label"),
    ({"type": 2, "style": 6, "sku_id": str(SKU), "emoji": {"name": "💎"}}, "emoji"),
    ({"type": 2, "style": 6, "sku_id": str(SKU), "url": "https://example.com"}, "url"),
    ({"type": 2, "style": 6}, "sku_id"),
    ({"type": 2, "style": 5, "url": "https://example.com", "label": "x", "sku_id": str(SKU)}, "sku_id"),
    ({"type": 2, "style": 1, "label": "Go"}, "custom_id"),
    ({"type": 2, "style": 1, "label": "Go", "custom_id": "go", "sku_id": str(SKU)}, "sku_id"),
])
def test_the_fake_refuses_buttons_of_the_wrong_shape(button, field):
    [problem] = _callback_problems(button)
    assert problem.status == 400 and problem.path == ("data", "components", 0, "components", 0, field)


@pytest.mark.parametrize("query, bad", [
    ({"exclude_ended": "yes"}, "exclude_ended"), ({"limit": "101"}, "limit"), ({"limit": "0"}, "limit"),
    ({"sku_ids": f"{SKU},x"}, "sku_ids"), ({"user_id": "me"}, "user_id"),
])
def test_the_fake_refuses_entitlement_queries_discord_refuses(query, bad):
    [problem] = spec_check.DiscordRules().problems("GET", f"/applications/{APP_ID}/entitlements", None, [], query)
    assert problem.status == 400 and problem.path == (bad,)


def test_the_fake_takes_the_queries_discord_py_sends():
    query = {"limit": "100", "sku_ids": f"{SKU},{BIG_SKU}", "exclude_ended": "1", "exclude_deleted": "0",
             "after": "1", "user_id": str(ALICE)}
    assert spec_check.DiscordRules().problems("GET", f"/applications/{APP_ID}/entitlements", None, [], query) == []


async def test_the_fake_lists_consumes_and_deletes_entitlements_as_discord_does(fake_discord):
    discord.http.Route.BASE, original = fake_discord.api_base_url, discord.http.Route.BASE
    client = discord.Client(intents=discord.Intents.none())
    try:
        await client.login(TOKEN)
        client._connection.application_id = APP_ID
        bought = await fake_discord.purchase(ALICE, SKU, dispatch=False)
        assert bought["type"] == PURCHASE
        await client.create_entitlement(discord.Object(BIG_SKU), discord.Object(BOB),
                                        discord.EntitlementOwnerType.user)  # discord.py returns nothing
        [first, second] = [e async for e in client.entitlements(limit=None, exclude_ended=True)]
        assert first.id == int(bought["id"]) and (second.user_id, second.sku_id) == (BOB, BIG_SKU)
        # A user holds one unconsumed entitlement of a consumable SKU: no second test one yet.
        with pytest.raises(discord.HTTPException) as held:
            await client.create_entitlement(discord.Object(BIG_SKU), discord.Object(BOB),
                                            discord.EntitlementOwnerType.user)
        assert held.value.code == 40074
        await first.consume()
        assert fake_discord.consumes == [first.id] and (await client.fetch_entitlement(first.id)).consumed
        with pytest.raises(discord.HTTPException):
            await first.consume()  # a second consume is not a success
        with pytest.raises(discord.NotFound) as unknown:
            await client.http.consume_entitlement(APP_ID, 1)
        assert unknown.value.code == 10029
        with pytest.raises(discord.HTTPException) as not_test:
            await first.delete()
        assert not_test.value.code == 40019  # only test entitlements can be deleted
        await second.delete()
        assert [e.id async for e in client.entitlements(limit=None)] == [first.id]
        assert [e.id async for e in client.entitlements(limit=None, exclude_deleted=False,
                                                        before=discord.Object(second.id + 1))] == [first.id, second.id]
    finally:
        await client.close()
        discord.http.Route.BASE = original
