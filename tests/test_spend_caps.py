"""[spend] caps in USD (issue #17, item 1): a request that would cross a cap is refused
before any cost, with what is left and when it resets; caps count reserved jobs, so
parallel accepts in two processes on one database never overshoot; the cap resets the
next day; every job end records what WaveSpeed charged and the kind of failure, and a
job keeps the place its spend counts to."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from bot.catalog import BUILT_IN, Params
from bot.config import SpendSettings
from bot.engine import Engine, place_key_of
from bot.jobs import Accepted, GenerationRequest, JobState, Rejected, UserRef
from bot.store import open_store
from bot.wavespeed import WaveSpeedClient
from tests.backends import process_config, query
from tests.conftest import PLATFORM, user
from tests.helpers import RecordingCourier, image_bytes, settled

pytestmark = pytest.mark.both_backends
ROOT = Path(__file__).resolve().parent.parent
V3 = "kwaivgi/kling-v3.0-pro/image-to-video"
PROMPT = "a cat dances"
DAY = 86400.0


def capped(settings, **caps: str):
    """Settings with these [spend] caps (dollars as text) and credits enough for many clips."""
    spend = SpendSettings(**{name: Decimal(usd) for name, usd in caps.items()})
    return replace(settings, spend=spend,
                   quota=replace(settings.quota, daily_credits=100, max_jobs_per_user=20))


def v3(who: UserRef | None = None, reply_to: dict | None = None) -> GenerationRequest:
    """A 5 s v3 clip: $1.00 once the simulator prices v3 at $1 per 5 s."""
    return GenerationRequest(who or user(), "animate", image_bytes(800, 600), Params(prompt=PROMPT, duration=5),
                             model="v3", reply_to={"chat": 1} if reply_to is None else reply_to)


async def jobs_written(store) -> int:
    return len(await store.user_jobs(user().key, active_only=False, limit=100))


async def test_a_request_that_would_cross_the_daily_cap_is_refused_with_what_is_left_and_when(
        make_engine, simulator, settings):
    simulator.set_base_price(V3, "1")
    engine = await make_engine(capped(settings, daily_usd="2.5"))
    first, second = await engine.accept(v3()), await engine.accept(v3())
    assert isinstance(first, Accepted) and isinstance(second, Accepted)

    third = await engine.accept(v3())  # the same user: a known row's one-write accept must not skip the cap

    assert isinstance(third, Rejected)
    assert "daily spending cap" in third.text and "$0.50 is left" in third.text
    assert "resets at 00:00 UTC" in third.text and "nothing was charged" in third.text
    assert await jobs_written(engine.store) == 2
    assert (await engine.balance(user())).total == 100 - 2 * 4  # $1 at $0.25 a credit: 4 credits each, twice
    # What a chat asks before downloading anything says so too.
    before = await engine.precheck(user(), "animate", "v3", Params(prompt=PROMPT, duration=5))
    assert isinstance(before, Rejected) and "$0.50 is left" in before.text
    # A cheaper clip that fits is still made.
    simulator.set_base_price(V3, "0.5")
    engine.prices.clear()
    assert isinstance(await engine.accept(v3()), Accepted)


async def test_each_place_has_its_own_daily_cap_and_its_jobs_keep_their_place(make_engine, simulator, settings):
    simulator.set_base_price(V3, "1")
    engine = await make_engine(capped(settings, daily_usd_per_place="1.5"))
    member = UserRef("telegram", "5", "member")

    here = await engine.accept(v3(member, {"chat_id": -100, "status_message_id": 1}))
    again = await engine.accept(v3(member, {"chat_id": -100, "status_message_id": 2}))
    elsewhere = await engine.accept(v3(member, {"chat_id": -200, "status_message_id": 3}))
    no_place = await engine.accept(v3())  # the console / a command line: no place, no per-place cap

    assert isinstance(here, Accepted) and isinstance(elsewhere, Accepted) and isinstance(no_place, Accepted)
    assert isinstance(again, Rejected) and "This place's daily spending cap" in again.text
    assert (await engine.store.job(here.job.id)).place_key == "telegram:chat:-100"
    assert (await engine.store.job(elsewhere.job.id)).place_key == "telegram:chat:-200"
    assert (await engine.store.job(no_place.job.id)).place_key == ""


def test_a_place_is_the_discord_server_or_dm_and_the_telegram_chat():
    assert place_key_of("discord", {"guild_id": 123, "user_id": 9}) == "discord:guild:123"
    assert place_key_of("discord", {"guild_id": None, "user_id": 9}) == "discord:dm:9"
    assert place_key_of("telegram", {"chat_id": -1001, "status_message_id": 4}) == "telegram:chat:-1001"
    assert place_key_of("console", {"chat": 1}) == "" and place_key_of("cli", {}) == ""


async def test_the_monthly_cap_refuses_and_says_the_date_it_resets(make_engine, simulator, settings):
    simulator.set_base_price(V3, "1")
    engine = await make_engine(capped(settings, monthly_usd="1.5"))
    assert isinstance(await engine.accept(v3()), Accepted)
    refused = await engine.accept(v3())
    assert isinstance(refused, Rejected) and "monthly spending cap" in refused.text
    assert "resets on " in refused.text and "-01 at 00:00 UTC" in refused.text


async def test_two_engines_on_one_database_accepting_in_parallel_never_overshoot(
        make_engine, simulator, settings):
    simulator.set_base_price(V3, "1")
    chosen = capped(settings, daily_usd="3.5")
    one, two = await make_engine(chosen), await make_engine(chosen)

    answers = await asyncio.gather(*(engine.accept(v3(user(n))) for n in range(8) for engine in (one, two)))

    accepted = [a for a in answers if isinstance(a, Accepted)]
    assert len(accepted) == 3
    assert all("daily spending cap" in a.text for a in answers if isinstance(a, Rejected))
    assert await one.store.spend_usd(0.0) == Decimal(3)


async def test_a_cancelled_job_frees_its_share_of_the_cap(make_engine, simulator, settings):
    simulator.set_base_price(V3, "1")
    engine = await make_engine(capped(settings, daily_usd="1.5"), start=False)
    await engine.start(drive=False)  # nothing is driven: the job stays queued
    queued = await engine.accept(v3())
    assert isinstance(await engine.accept(v3()), Rejected)  # the reserved job counts

    await engine.cancel(user(), queued.job.id)

    cancelled = await engine.store.job(queued.job.id)
    assert cancelled.failure == "cancelled" and cancelled.charged_usd == Decimal(0)
    assert isinstance(await engine.accept(v3()), Accepted)


async def test_the_cap_resets_at_the_next_day(simulator, settings, courier):
    simulator.set_base_price(V3, "1")
    chosen = capped(settings, daily_usd="1.5")
    offset = [0.0]
    ws = chosen.wavespeed
    engine = Engine(chosen, await open_store(chosen.storage.database), WaveSpeedClient(ws.base_url, ws.api_key),
                    clock=lambda: time.time() + offset[0])
    engine.register(PLATFORM, courier)
    try:
        await engine.start(drive=False)
        assert isinstance(await engine.accept(v3()), Accepted)
        assert isinstance(await engine.accept(v3()), Rejected)
        offset[0] = DAY  # the next day
        assert isinstance(await engine.accept(v3()), Accepted)
        assert isinstance(await engine.accept(v3()), Rejected)
    finally:
        await engine.close()


async def test_every_end_records_what_wavespeed_charged_and_the_kind_of_failure(make_engine, simulator, settings):
    simulator.set_base_price(V3, "1")
    engine = await make_engine(capped(settings))
    delivered = await engine.accept(v3())
    done = await settled(engine, delivered.job.id)
    simulator.plan_outcome("failed")
    failed = await settled(engine, (await engine.accept(v3())).job.id)

    assert done.state == JobState.DONE and done.charged_usd == Decimal(1) and done.failure is None
    # WaveSpeed bills no failed task: it counts nothing, and is counted as its fault.
    assert failed.state == JobState.FAILED and failed.charged_usd == Decimal(0) and failed.failure == "wavespeed"
    assert await engine.store.spend_usd(0.0) == Decimal(1)


async def test_a_video_made_but_not_posted_counts_as_charged(make_engine, simulator, settings):
    simulator.set_base_price(V3, "1")
    courier = RecordingCourier(fail_deliveries=10)  # the chat never takes it
    engine = await make_engine(capped(settings), start=False)
    engine.couriers.register(PLATFORM, courier)
    await engine.start()
    job = await settled(engine, (await engine.accept(v3())).job.id, timeout=30)
    assert job.state == JobState.FAILED and job.failure == "delivery"
    assert job.charged_usd == Decimal(1)  # WaveSpeed made it, and bills it
    assert await engine.store.spend_usd(0.0) == Decimal(1)


async def test_an_unquoted_job_counts_its_credits_worth(make_engine, simulator, settings):
    simulator.fail_next("price", 500, times=50)  # no quote: the catalog's cost is charged
    engine = await make_engine(capped(settings, daily_usd="100"))
    answer = await engine.accept(v3())
    assert isinstance(answer, Accepted) and answer.job.quote_usd is None
    assert await engine.store.spend_usd(0.0, credit_usd=Decimal("0.25")) == Decimal("0.25") * answer.job.cost


async def spawn(config: Path, events: Path, submit: int, at: float) -> asyncio.subprocess.Process:
    """A bot process that makes ``submit`` requests all at once at Unix time ``at``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.engine_process", str(config), str(events), "--submit", str(submit),
        "--at-once-at", str(at), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE)


async def answers_of(process: asyncio.subprocess.Process, count: int) -> list[str]:
    """The first ``count`` answers a bot process printed (one line per request)."""
    assert process.stdout is not None
    return [(await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip() for _ in range(count)]


async def test_two_bot_processes_on_one_database_never_overshoot_the_cap(tmp_path, simulator, database):
    effect = BUILT_IN.resolve_model(None, "effect").id
    simulator.set_base_price(effect, "1")
    config = process_config(tmp_path, simulator.base_url, database, '\n[spend]\ndaily_usd = "3.5"\n')
    at = time.time() + 8  # both started by then: their requests race each other
    processes = [await spawn(config, tmp_path / f"events-{n}.jsonl", submit=4, at=at) for n in range(2)]
    try:
        answers = [line for process in processes for line in await answers_of(process, 4)]
    finally:
        for process in processes:
            process.terminate()
            await process.wait()
    quotes = [Decimal(str(usd)) for (usd,) in await query(database, "select quote_usd from jobs")]
    assert quotes == [Decimal(1)] * 3 and sum(quotes) <= Decimal("3.5")
    assert sum("daily spending cap" in line for line in answers) == 5
