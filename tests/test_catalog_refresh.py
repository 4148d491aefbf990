"""The live catalog over time: a model WaveSpeed withdraws, a restart without network,
two processes sharing one listing, prices warmed at start, and listings or surprises
that must not stop the bot or its refreshes."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from dataclasses import replace
from decimal import Decimal

import pytest

from bot import messages
from bot.catalog import Params, ValidationError, build_catalog
from bot.catalog.listing import MOST_MODELS
from bot.devtools.models import ModelBook, load_listing
from bot.engine import Engine
from bot.jobs import GenerationRequest, JobState, Rejected
from bot.store import open_store
from bot.wavespeed import WaveSpeedClient
from tests.backends import ledger_entries, raw_sql
from tests.conftest import PLATFORM, effect_request, user
from tests.helpers import image_bytes, job_in_state, settled

pytestmark = pytest.mark.both_backends

V3 = "kwaivgi/kling-v3.0-pro/image-to-video"
V3_SUBMIT = "/api/v3/" + V3
LISTING = "/api/v3/models"


def v3_request(who=None) -> GenerationRequest:
    return GenerationRequest(who or user(), "animate", image_bytes(800, 600), Params(prompt="a cat dances"),
                             model="v3", reply_to={"chat": 1})


def listings_read(simulator) -> int:
    return sum(1 for r in simulator.requests if r["path"] == LISTING)


def quotes_asked(simulator) -> int:
    return sum(1 for r in simulator.requests if r["path"] == "/api/v3/model/price")


async def until(check, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        while not (found := await check()):
            await asyncio.sleep(0.05)
    return found


async def ledger_sum(store, job_id: int) -> int:
    rows = await raw_sql(store, "select daily_delta, bonus_delta from ledger where job_id = ?", [job_id])
    return sum(int(r["daily_delta"]) + int(r["bonus_delta"]) for r in rows)


def refreshing_every(settings, seconds: float):
    return replace(settings, models=replace(settings.models, refresh_hours=seconds / 3600))


# --- a model WaveSpeed withdraws ------------------------------------------------------------


async def test_a_withdrawn_model_is_no_longer_offered_and_its_queued_job_is_refunded(
        make_engine, courier, simulator):
    engine = await make_engine(max_concurrent=1)
    simulator.job_seconds = 2.0
    blocker = await engine.accept(effect_request())
    await until(lambda: job_in_state(engine, blocker.job.id, "processing"))
    queued = await engine.accept(v3_request())  # waits behind the effect: not yet at WaveSpeed
    assert queued.job.cost == 3 and (await engine.store.job(queued.job.id)).state == JobState.QUEUED

    simulator.remove_model(V3)
    assert await engine.live.refresh()
    assert "v3.0-pro" not in engine.catalog.model_keys("animate")
    with pytest.raises(ValidationError, match=r"Unknown model 'v3'\. Choose one of: v1\.6, v2\.1, master"):
        engine.catalog.resolve_model("v3", "animate")
    refused = await engine.accept(v3_request(user(2)))
    assert isinstance(refused, Rejected) and "Unknown model 'v3'" in refused.text

    kind, reason = await courier.outcome(queued.job.id)
    assert (kind, reason) == ("failed", messages.MODEL_WITHDRAWN + " Your 3 credits were refunded.")
    assert reason == "WaveSpeed no longer offers this model, so your video was not started. " \
                     "Your 3 credits were refunded."
    assert (await courier.outcome(blocker.job.id))[0] == "delivered"
    await settled(engine, blocker.job.id)
    job = await settled(engine, queued.job.id)
    assert job.state == JobState.FAILED and job.prediction_id is None
    assert await ledger_entries(engine.store, job.id) == ["reserve", "refund"]
    assert await ledger_sum(engine.store, job.id) == 0
    assert (await engine.balance(user())).total == 9  # only the effect was paid
    assert not [r for r in simulator.requests if r["path"] == V3_SUBMIT]  # nothing reached WaveSpeed


async def test_a_job_already_at_wavespeed_when_its_model_is_withdrawn_finishes(engine, courier, simulator):
    simulator.job_seconds = 1.5
    answer = await engine.accept(v3_request())
    await until(lambda: job_in_state(engine, answer.job.id, "processing"))
    simulator.remove_model(V3)
    assert await engine.live.refresh()
    assert not engine.catalog.offers(V3)
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    job = await settled(engine, answer.job.id)
    assert job.state == JobState.DONE and await ledger_entries(engine.store, job.id) == ["reserve", "commit"]
    assert (await engine.balance(user())).total == 7


# --- restarts and processes ------------------------------------------------------------------


async def started_at(settings, courier, clock):
    """An engine whose clock is ``clock`` (like a process whose listing is that old)."""
    ws = settings.wavespeed
    engine = Engine(settings, await open_store(settings.storage.database),
                    WaveSpeedClient(ws.base_url, ws.api_key, retry_cap=0.05), clock=clock)
    engine.register(PLATFORM, courier)
    await engine.start()
    return engine


@pytest.mark.parametrize("outage", ["closed", "failing"])
async def test_a_restart_without_network_keeps_the_stored_catalog(make_engine, courier, simulator, settings,
                                                                  caplog, outage):
    two_days_ago = await started_at(settings, courier, lambda: time.time() - 2 * 86400)
    assert "v3.0-pro" in two_days_ago.catalog.model_keys("animate")
    await two_days_ago.close()
    if outage == "closed":
        await simulator.close()
    else:
        simulator.fail_next("models", 503, times=50)
        simulator.fail_next("price", 503, times=50)

    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        engine = await make_engine()  # its stored listing is due again: WaveSpeed is asked, and fails
        assert time.monotonic() - started < 8.0
    assert "v3.0-pro" in engine.catalog.model_keys("animate")
    answer = await engine.accept(v3_request())
    assert answer.job.cost == 3  # no quote: the stored listing's $0.56 at $0.25 a credit
    assert (await engine.store.job(answer.job.id)).quote_usd is None
    listing_warnings = [r for r in caplog.records if r.name == "bot.engine.models" and r.levelno >= logging.WARNING]
    assert len(listing_warnings) == 1 and "keeping the stored one" in listing_warnings[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info] and "Traceback" not in caplog.text


async def test_two_processes_share_one_listing(make_engine, simulator, settings):
    first = await make_engine()
    assert listings_read(simulator) == 1
    second = await make_engine(refreshing_every(settings, 3.0))
    assert listings_read(simulator) == 1  # the stored listing is fresh: not read again
    assert "v3.0-pro" in second.catalog.model_keys("animate")

    simulator.set_base_price(V3, "0.9")
    assert await first.live.refresh()
    assert listings_read(simulator) == 2

    async def second_sees_it() -> bool:
        return second.catalog.resolve_model("v3", "animate").base_usd == Decimal("0.9")

    await until(second_sees_it, timeout=8.0)  # its keeper, when due, finds the newer stored listing
    assert listings_read(simulator) == 2  # and uses it without a read of its own
    assert await second.price("animate", "v3", Params(prompt="a cat", duration=5)) == 4  # ceil(0.9 / 0.25)


# --- prices at start -----------------------------------------------------------------------


async def test_menu_prices_are_quoted_before_start_returns(make_engine, simulator):
    engine = await make_engine()
    asked = quotes_asked(simulator)
    assert asked > 0
    # 10 s of v3 is quoted $1.12 (5 credits); the catalog's cost would say 2 x 3
    assert engine.quote("animate", "v3", Params(prompt="a cat", duration=10)) == 5
    assert "/animate v3.0-pro 3 credits per 5 s" in engine.price_text()
    assert "v3.0-pro" in engine.models_text()
    assert quotes_asked(simulator) == asked  # nothing was asked at question time


# --- listings and surprises that must not stop the bot ------------------------------------


def strange_entries() -> list[dict]:
    """Entries shaped wrong in the ways a real listing might be (the simulator can serve them)."""
    v3 = next(e for e in load_listing() if e["model_id"] == V3)

    def like_v3(model_id: str, **schema_changes) -> dict:
        entry = copy.deepcopy(v3)
        entry["model_id"] = model_id
        entry["api_schema"]["api_schemas"][0]["request_schema"].update(schema_changes)
        return entry

    v3_properties = v3["api_schema"]["api_schemas"][0]["request_schema"]["properties"]
    return [
        like_v3("kwaivgi/kling-v9-pro/image-to-video", required="image"),  # not a list
        like_v3("kwaivgi/kling-v8-pro/image-to-video", properties={**v3_properties, "duration": "ten"}),
        like_v3("kwaivgi/kling-v7-pro/image-to-video",
                properties={**v3_properties, "duration": {"type": "string", "enum": ["5", "²"]}}),
        {**copy.deepcopy(v3), "model_id": "kwaivgi/kling-v6-pro/image-to-video", "api_schema": "none"},
        {**copy.deepcopy(v3), "model_id": "kwaivgi/kling-v5-pro/image-to-video", "api_schema": {"api_schemas": 3}},
        {"model_id": "kwaivgi/kling-v4-pro/image-to-video", "base_price": 0.5},  # no schema at all
    ]


async def test_a_malformed_listing_does_not_stop_the_start(make_engine, simulator, caplog):
    simulator.models = ModelBook(load_listing() + strange_entries())
    with caplog.at_level(logging.WARNING):
        engine = await make_engine()
    ids = {m.id for m in engine.catalog.models}
    assert V3 in ids and not {e["model_id"] for e in strange_entries()} & ids
    assert engine.catalog.resolve_model("v3", "animate").id == V3
    assert "model list entry 'kwaivgi/kling-v9-pro/image-to-video' skipped" in caplog.text


def test_wrong_types_in_a_listing_are_skipped_not_raised():
    listing = [*load_listing(), *strange_entries(), 5, None, "text", {"model_id": V3, "base_price": "abc"},
               {"model_id": ["x"], "api_schema": {}}]
    offer = build_catalog(listing)
    assert "v3.0-pro" in offer.model_keys("animate")


async def test_a_long_listing_is_built_without_stalling_the_bot(make_engine, simulator):
    v3 = next(e for e in load_listing() if e["model_id"] == V3)
    many = [{**copy.deepcopy(v3), "model_id": f"kwaivgi/kling-v3.0-pro-copy{i}/image-to-video"} for i in range(2000)]
    simulator.models = ModelBook(load_listing() + many)
    started = time.monotonic()
    engine = await make_engine()
    assert time.monotonic() - started < 8.0
    # the first MOST_MODELS of the listing (a listing of 50,000 would take minutes to check)
    assert len(engine.catalog.models) >= MOST_MODELS and "v3.0-pro" in engine.catalog.model_keys("animate")


def model_needing(field: str) -> dict:
    """A photo model whose schema requires an input no chat option gives (no typical request exists)."""
    v3 = copy.deepcopy(next(e for e in load_listing() if e["model_id"] == V3))
    v3["model_id"] = "kwaivgi/kling-v3.5-pro/image-to-video"
    schema = v3["api_schema"]["api_schemas"][0]["request_schema"]
    schema["properties"][field] = {"type": "string", "enum": ["a", "b"]}
    schema["required"] = [*schema.get("required", []), field]
    return v3


async def test_a_model_no_menu_can_quote_neither_breaks_help_nor_the_refreshes(make_engine, simulator, settings):
    simulator.models = ModelBook([*load_listing(), model_needing("mode")])
    engine = await make_engine(refreshing_every(settings, 1.0))
    assert "v3.5-pro" in engine.catalog.model_keys("animate")  # the newest pro: offered by default
    assert "/animate v3.5-pro 3 credits per 5 s" in engine.price_text()  # its catalog cost
    assert "v3.5-pro" in engine.models_text()
    before = listings_read(simulator)
    await until(lambda: asyncio.sleep(0, listings_read(simulator) >= before + 2), timeout=8.0)


async def test_a_listing_the_store_cannot_keep_is_still_used_and_the_keeper_goes_on(
        make_engine, simulator, settings):
    listing = load_listing()
    v3 = next(e for e in listing if e["model_id"] == V3)
    v3["description"] = "Kling v3\u0000 pro"  # PostgreSQL's jsonb refuses a NUL character
    simulator.models = ModelBook(listing)
    engine = await make_engine(refreshing_every(settings, 1.0))
    assert "v3.0-pro" in engine.catalog.model_keys("animate")
    simulator.set_base_price(V3, "0.9")
    await until(lambda: asyncio.sleep(0, engine.catalog.resolve_model("v3", "animate").base_usd == Decimal("0.9")),
                timeout=8.0)
