"""Prices before spending: WaveSpeed's quote decides what a request is shown and charged,
in whole credits rounded up in decimal; the job keeps the USD quote; without a quote the
catalog's cost applies (never zero), without the bot hanging; ``[costs]`` still wins."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from decimal import Decimal

import pytest

from bot.catalog import Params
from bot.catalog.schema import MEDIA_STAND_IN
from bot.engine import Engine, prices
from bot.jobs import GenerationRequest
from bot.store import open_store
from bot.wavespeed import WaveSpeedClient
from tests.backends import raw_sql
from tests.conftest import PLATFORM, user
from tests.helpers import image_bytes, settled

pytestmark = pytest.mark.both_backends

V3 = "kwaivgi/kling-v3.0-pro/image-to-video"
PROMPT = "a cat dances"


def priced(settings, credit_usd: str = "0.25", costs: dict | None = None):
    """Settings with a credit worth ``credit_usd`` and credits enough for any clip."""
    return replace(settings, quota=replace(settings.quota, credit_usd=Decimal(credit_usd), daily_credits=100),
                   costs=costs or {})


def v3_request(duration: int = 5, sound: bool | None = None) -> GenerationRequest:
    return GenerationRequest(user(), "animate", image_bytes(800, 600),
                             Params(prompt=PROMPT, duration=duration, sound=sound), model="v3", reply_to={"chat": 1})


def asked(simulator, prompt: str = PROMPT) -> list[dict]:
    """The quotes WaveSpeed was asked for requests with this prompt."""
    return [r["inputs"] for r in simulator.price_requests
            if r["model_id"] == V3 and r["inputs"].get("prompt") == prompt]


def quotes_asked(simulator) -> int:
    """POST /api/v3/model/price calls that reached the simulator (answered or not)."""
    return sum(1 for r in simulator.requests if r["path"] == "/api/v3/model/price")


async def reserved_in_ledger(store, job_id: int) -> int:
    rows = await raw_sql(store, "select daily_delta, bonus_delta from ledger where job_id = ? and entry = 'reserve'",
                         [job_id])
    return -sum(int(r["daily_delta"]) + int(r["bonus_delta"]) for r in rows)


@pytest.mark.parametrize(("base", "duration", "sound", "usd", "credits"), [
    ("0.25", 6, None, "0.3", 3),  # $0.30 at $0.10 a credit is exactly 3, not 4
    ("0.5", 11, None, "1.1", 11),  # 1.1 / 0.1 is 11.000000000000002 in floats: 12
    ("0.56", 10, True, "1.68", 17),  # sound on: x1.5
])
async def test_the_quote_decides_the_credits_shown_reserved_and_kept(
        make_engine, courier, simulator, settings, base, duration, sound, usd, credits):
    simulator.set_base_price(V3, base)
    engine = await make_engine(priced(settings, "0.1"))
    params = Params(prompt=PROMPT, duration=duration, sound=sound)
    assert await engine.price("animate", "v3", params) == credits  # what a picker or a precheck shows

    answer = await engine.accept(v3_request(duration, sound))
    assert answer.job.cost == credits and answer.credits_left == 100 - credits
    assert engine.quote("animate", "v3", params) == credits  # the same, from the cache, without waiting
    [inputs] = asked(simulator)  # asked once, with exactly the request's inputs
    assert inputs == {"prompt": PROMPT, "duration": duration, "image": MEDIA_STAND_IN,
                      **({"sound": True} if sound else {})}
    job = await engine.store.job(answer.job.id)
    assert isinstance(job.quote_usd, Decimal) and job.quote_usd == Decimal(usd)
    assert await reserved_in_ledger(engine.store, job.id) == credits

    assert (await courier.outcome(job.id))[0] == "delivered"
    await settled(engine, job.id)
    assert (await engine.balance(user())).total == 100 - credits
    [submission] = [s for s in simulator.submissions if s["model"] == V3]
    assert submission["body"]["duration"] == duration


async def test_a_changed_price_changes_what_is_shown_and_charged_after_a_refresh(make_engine, simulator, settings):
    engine = await make_engine(priced(settings, "0.1"))
    five = Params(prompt=PROMPT, duration=5)
    assert engine.quote("animate", "v3", five) == 6  # $0.56
    assert "/animate v3.0-pro 6 credits per 5 s" in engine.price_text()

    simulator.set_base_price(V3, "0.9")
    await engine.live.refresh()
    assert await engine.price("animate", "v3", five) == 9
    assert engine.quote("animate", "v3", five) == 9
    assert "/animate v3.0-pro 9 credits per 5 s" in engine.price_text()
    answer = await engine.accept(v3_request(5))
    assert answer.job.cost == 9 and (await engine.store.job(answer.job.id)).quote_usd == Decimal("0.9")


async def test_a_quote_is_asked_again_after_an_hour(settings, courier, simulator):
    later = [0.0]
    settings = priced(settings, "0.1")
    ws = settings.wavespeed
    engine = Engine(settings, await open_store(settings.storage.database),
                    WaveSpeedClient(ws.base_url, ws.api_key, retry_cap=0.05), clock=lambda: time.time() + later[0])
    engine.register(PLATFORM, courier)
    await engine.start()
    try:
        seven = Params(prompt=PROMPT, duration=7)
        assert await engine.price("animate", "v3", seven) == 8  # 0.56 / 5 * 7 = $0.784
        simulator.set_base_price(V3, "0.9")  # no refresh: the hour-old quote is what changes it
        later[0] = 1800.0
        assert await engine.price("animate", "v3", seven) == 8 and len(asked(simulator)) == 1
        later[0] = prices.QUOTES_KEPT_FOR + 1
        assert await engine.price("animate", "v3", seven) == 13  # 0.9 / 5 * 7 = $1.26
        answer = await engine.accept(v3_request(7))
        assert answer.job.cost == 13 and (await engine.store.job(answer.job.id)).quote_usd == Decimal("1.26")
    finally:
        await engine.close()


async def test_without_a_quote_the_catalog_cost_is_charged(make_engine, courier, simulator, settings, caplog):
    engine = await make_engine(priced(settings, "0.1"))
    simulator.fail_next("price", 503, times=50)
    with caplog.at_level(logging.WARNING):
        answer = await engine.accept(v3_request(7))
    assert answer.job.cost == 12  # the listing's $0.56 is 6 credits per started 5 s
    job = await engine.store.job(answer.job.id)
    assert job.quote_usd is None and await reserved_in_ledger(engine.store, job.id) == 12
    assert caplog.text.count("no price quote") == 1 and "Traceback" not in caplog.text
    assert (await courier.outcome(job.id))[0] == "delivered"
    assert (await engine.balance(user())).total == 88


async def test_an_outage_costs_one_wait_not_one_per_request(make_engine, simulator, settings, monkeypatch):
    monkeypatch.setattr(prices, "QUOTE_WAIT", 1.0)
    engine = await make_engine(priced(settings, "0.1"))
    simulator.fail_next("price", 0, delay=30.0, times=20)  # the price route answers only after 30 s
    before = quotes_asked(simulator)
    started = time.monotonic()
    first = await engine.accept(v3_request(7))
    assert first.job.cost == 12 and time.monotonic() - started < 3.0  # waited QUOTE_WAIT, not 30 s
    started = time.monotonic()
    for duration in (3, 8, 12):  # other prices, asked while WaveSpeed is known not to answer
        assert await engine.price("animate", "v3", Params(prompt=PROMPT, duration=duration)) == 6 * -(-duration // 5)
    assert time.monotonic() - started < 1.0 and quotes_asked(simulator) == before + 1


async def test_a_model_without_a_listed_price_and_no_quote_still_costs_a_credit(make_engine, simulator, settings):
    simulator.set_base_price(V3, "0")
    engine = await make_engine(priced(settings, "0.1"))
    simulator.fail_next("price", 503, times=50)
    answer = await engine.accept(v3_request(7))
    assert answer.job.cost == 2 and (await engine.balance(user())).total == 98


async def test_costs_in_the_config_override_the_quote(make_engine, simulator, settings):
    engine = await make_engine(priced(settings, "0.1", costs={"v3.0-pro": 2}))
    assert engine.quote("animate", "v3", Params(prompt=PROMPT, duration=7)) == 4
    assert "/animate v3.0-pro 2 credits per 5 s" in engine.price_text()
    answer = await engine.accept(v3_request(7))
    assert answer.job.cost == 4 and (await engine.balance(user())).total == 96
    assert (await engine.store.job(answer.job.id)).quote_usd == Decimal("0.784")  # still kept for spend caps
    assert engine.quote("animate", "v2.1", Params(prompt=PROMPT, duration=5)) == 3  # others: their quote


async def test_a_waiter_given_up_does_not_cancel_the_quote_others_wait_for(make_engine, simulator, settings):
    engine = await make_engine(priced(settings, "0.1"))
    simulator.fail_next("price", 0, delay=1.0)  # answers, late
    seven = Params(prompt=PROMPT, duration=7)
    impatient = asyncio.ensure_future(engine.price("animate", "v3", seven))
    patient = asyncio.ensure_future(engine.price("animate", "v3", seven))
    await asyncio.sleep(0.3)
    impatient.cancel()
    assert await patient == 8
    assert len(asked(simulator)) == 1  # one question for both
    assert engine.quote("animate", "v3", seven) == 8
