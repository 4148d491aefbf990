"""Attacks on #16's money across processes: a catalog or a quote that changes between
what a user was shown and what a process does, processes whose catalogs differ, a model
withdrawn at each step of its job, quotes that are slow. Each ends with the job settled
once and the credits equal to the ledger."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from bot import messages
from bot.catalog import Params
from bot.engine import prices
from bot.jobs import GenerationRequest, JobState
from bot.store.copy import copy_between
from tests.backends import ledger_entries, process_config, query, raw_sql
from tests.conftest import user
from tests.helpers import image_bytes, settled

pytestmark = pytest.mark.both_backends

V26 = "kwaivgi/kling-v2.6-pro/image-to-video"
V3 = "kwaivgi/kling-v3.0-pro/image-to-video"
PROMPT = "a cat dances"
LISTING = "/api/v3/models"
PRICE = "/api/v3/model/price"
ROOT = Path(__file__).resolve().parent.parent


def offering(settings, *patterns: str, credit_usd: str = "0.25"):
    """Settings offering the seeds and ``patterns``, credits enough for anything."""
    return replace(settings, models=replace(settings.models, enabled=["kwaivgi/kling-effects",
                                                                      "kwaivgi/kling-v2.1-*", *patterns]),
                   quota=replace(settings.quota, credit_usd=Decimal(credit_usd), daily_credits=100))


def request(model: str, who=None, duration: int = 5, sound: bool | None = None) -> GenerationRequest:
    return GenerationRequest(who or user(), "animate", image_bytes(800, 600),
                             Params(prompt=PROMPT, duration=duration, sound=sound), model=model,
                             reply_to={"chat": 1})


async def until(check, timeout: float = 15.0):
    async with asyncio.timeout(timeout):
        while not (found := await check()):
            await asyncio.sleep(0.05)
    return found


async def credits_match_ledger(store, who=None, daily_credits: int = 100) -> int:
    """The user's credits (asserted equal to their day's grant plus the ledger's sum)."""
    who = who or user()
    [row] = await raw_sql(store, "select daily_left, bonus from users where key = ?", [who.key])
    rows = await raw_sql(store, "select daily_delta, bonus_delta from ledger where user_key = ?", [who.key])
    daily = sum(int(r["daily_delta"]) for r in rows)
    bonus = sum(int(r["bonus_delta"]) for r in rows)
    assert (int(row["daily_left"]), int(row["bonus"])) == (daily_credits + daily, bonus), rows
    return int(row["daily_left"]) + int(row["bonus"])


# --- a worker whose catalog is older than the front's ----------------------------------------


async def test_a_worker_with_an_older_listing_submits_a_model_the_front_saw_listed(
        make_engine, courier, simulator, settings):
    """The front read a listing with v2.6 in it after the worker read one without: the job
    is WaveSpeed's to make, not "withdrawn" (the worker looks at the stored listing first)."""
    chosen = offering(settings, "*v2.6-pro*")
    simulator.remove_model(V26)
    worker = await make_engine(chosen, start=False)
    await worker.start()
    assert not worker.catalog.listed(V26)
    simulator.restore_model(V26)
    front = await make_engine(chosen, start=False)
    await front.start(drive=False)
    assert await front.live.refresh()  # e.g. its daily read came first
    answer = await front.accept(request("v2.6"))
    assert answer.job.cost == 2  # $0.50 at $0.25

    outcome = await courier.outcome(answer.job.id)
    assert outcome[0] == "delivered", outcome
    job = await settled(worker, answer.job.id)
    assert job.state == JobState.DONE and await ledger_entries(worker.store, job.id) == ["reserve", "commit"]
    assert [s["model"] for s in simulator.submissions] == [V26]
    assert await credits_match_ledger(worker.store) == 98


async def test_a_front_and_a_worker_that_disagree_on_models_and_credit_value(
        make_engine, courier, simulator, settings):
    """The front offers v3 at $0.10 a credit; the worker offers neither v3 nor that value: the
    job is still made (WaveSpeed lists it) and charged what the front showed, no more."""
    worker = await make_engine(offering(settings, credit_usd="0.25"), start=False)
    await worker.start()
    assert not worker.catalog.offers(V3) and worker.catalog.listed(V3)
    front = await make_engine(offering(settings, "*v3.0-pro*", credit_usd="0.1"), start=False)
    await front.start(drive=False)
    shown = await front.price("animate", "v3", Params(prompt=PROMPT, duration=7))
    answer = await front.accept(request("v3", duration=7))
    assert shown == answer.job.cost == 8  # $0.784 at $0.10
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    job = await settled(worker, answer.job.id)
    assert job.cost == 8 and job.quote_usd == Decimal("0.784")
    assert await ledger_entries(worker.store, job.id) == ["reserve", "commit"]
    assert await credits_match_ledger(worker.store) == 92


# --- a model withdrawn at each step of its job -------------------------------------------------


async def unconfirmed(engine, job_id: int) -> bool:
    """Whether a job's submit went out and its answer was lost (the window is recorded)."""
    job = await engine.store.job(job_id)
    return job.submit_ended_at is not None and job.state == JobState.SUBMITTING


async def test_withdrawn_while_its_submit_is_unconfirmed_but_made_the_task_it_is_delivered(
        make_engine, courier, simulator, settings):
    """The submit made the task and its answer was lost; then WaveSpeed withdrew the model.
    The history is looked at before the listing: the paid task is adopted, not refunded."""
    engine = await make_engine(offering(settings, "*v3.0-pro*"))
    simulator.fail_next("submit", kind="accept_drop")
    answer = await engine.accept(request("v3"))

    await until(lambda: unconfirmed(engine, answer.job.id))
    simulator.remove_model(V3)
    assert await engine.live.refresh() and not engine.catalog.listed(V3)
    outcome = await courier.outcome(answer.job.id)
    assert outcome[0] == "delivered", outcome
    job = await settled(engine, answer.job.id)
    assert job.state == JobState.DONE and await ledger_entries(engine.store, job.id) == ["reserve", "commit"]
    assert len(simulator.tasks) == 1 and len(simulator.submissions) == 1
    assert await credits_match_ledger(engine.store) == 97


async def test_withdrawn_while_its_submit_is_unconfirmed_and_made_nothing_it_is_refunded_once(
        make_engine, courier, simulator, settings):
    engine = await make_engine(offering(settings, "*v3.0-pro*"))
    simulator.fail_next("submit", 0, kind="reset")  # no task, and the bot cannot know it
    answer = await engine.accept(request("v3"))

    await until(lambda: unconfirmed(engine, answer.job.id))
    simulator.remove_model(V3)
    assert await engine.live.refresh()
    outcome = await courier.outcome(answer.job.id)
    assert outcome == ("failed", messages.with_refund(messages.MODEL_WITHDRAWN, 3))
    job = await settled(engine, answer.job.id)
    assert job.state == JobState.FAILED and await ledger_entries(engine.store, job.id) == ["reserve", "refund"]
    assert not simulator.tasks
    assert await credits_match_ledger(engine.store) == 100


# --- quotes that are slow -----------------------------------------------------------------------


async def test_slow_quotes_of_many_requests_are_waited_for_together_not_four_at_a_time(
        make_engine, simulator, settings, monkeypatch):
    """20 requests of 20 distinct prices while each quote takes 1.2 s (inside QUOTE_WAIT):
    the quotes are asked side by side, so no request waits for five rounds of others'."""
    monkeypatch.setattr(prices, "QUOTE_WAIT", 3.0)
    engine = await make_engine(offering(settings, "*v3.0-pro*"))
    simulator.fail_next("price", 0, delay=1.2, times=40)  # answered, late
    requests = [request("v3", user(n), duration=3 + n % 10, sound=n >= 10) for n in range(20)]

    async def timed(one):
        started = time.monotonic()
        answer = await engine.accept(one)
        return time.monotonic() - started, answer

    answers = await asyncio.gather(*(timed(r) for r in requests))
    assert all(a.job.quote_usd is not None for _, a in answers)  # every one quoted, none on fallback
    slowest = max(took for took, _ in answers)
    assert slowest < 3.5, f"the slowest accept took {slowest:.1f} s"


# --- a process killed mid-refresh and mid-accept ------------------------------------------------


async def _generate(tmp_path, config, *args: str) -> asyncio.subprocess.Process:
    (tmp_path / "photo.jpg").write_bytes(image_bytes(800, 600))
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY"))}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "generate", "photo.jpg", *args, "--config", str(config),
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


def _asked(simulator, path: str) -> int:
    return sum(1 for r in simulator.requests if r["path"] == path)


async def _killed_when(run, check) -> None:
    try:
        await until(lambda: asyncio.sleep(0, check()), timeout=30)
    finally:
        run.kill()  # SIGKILL: nothing of the process's own runs after this
        await run.communicate()


async def _ledger_total(database: str) -> tuple[int, int, int]:
    """(credits held, the ledger's sum for that user, jobs) of the command line's one user."""
    [(held,)] = await query(database, "select daily_left + bonus from users")
    [(moved,)] = await query(database, "select coalesce(sum(daily_delta + bonus_delta), 0) from ledger")
    [(jobs,)] = await query(database, "select count(*) from jobs")
    return int(held), int(moved), int(jobs)


async def test_killed_mid_refresh_and_mid_quote_leaves_no_half_listing_nor_half_job(
        tmp_path, simulator, database):
    config = process_config(tmp_path, simulator.base_url, database, "[models]\nrefresh_hours = 0.0001")
    first = await _generate(tmp_path, config, "--effect", "hula", "-o", "one.mp4")
    _, err = await asyncio.wait_for(first.communicate(), 60)
    assert first.returncode == 0, err.decode()[-500:]
    warm_quotes = _asked(simulator, PRICE)  # what a start quotes for the menus
    [(fetched_at,)] = await query(database, "select fetched_at from model_listing")
    assert await _ledger_total(database) == (19, -1, 1)

    # killed while its due refresh waits for the listing: the stored one stays whole
    await asyncio.sleep(0.5)
    simulator.fail_next("models", 0, delay=60)
    listings = _asked(simulator, LISTING)
    run = await _generate(tmp_path, config, "--model", "v3", "--prompt", PROMPT, "--duration", "7")
    await _killed_when(run, lambda: _asked(simulator, LISTING) > listings)
    assert await query(database, "select fetched_at from model_listing") == [(fetched_at,)]
    assert await _ledger_total(database) == (19, -1, 1)

    # killed while its accept waits for the quote: nothing reserved, no job
    for _ in range(warm_quotes):
        simulator.fail_next("price", 0)  # the menus' quotes are answered
    simulator.fail_next("price", 0, delay=60)  # the request's is not
    quotes = _asked(simulator, PRICE)
    run = await _generate(tmp_path, config, "--model", "v3", "--prompt", PROMPT, "--duration", "7")
    await _killed_when(run, lambda: _asked(simulator, PRICE) > quotes + warm_quotes)
    assert await _ledger_total(database) == (19, -1, 1)
    assert len(simulator.submissions) == 1

    last = await _generate(tmp_path, config, "--model", "v3", "--prompt", PROMPT, "--duration", "7",
                           "-o", "two.mp4")
    _, err = await asyncio.wait_for(last.communicate(), 60)
    assert last.returncode == 0, err.decode()[-500:]
    assert await _ledger_total(database) == (15, -5, 2)  # $0.784 at $0.25: 4 credits
    states = await query(database, "select state, settlement, count(*) from jobs group by 1, 2")
    assert states == [("done", "committed", 2)]
    assert len(simulator.submissions) == len(simulator.tasks) == 2


# --- a price that changes between what a menu showed and the accept ------------------------------


async def test_a_price_raised_without_a_refresh_charges_what_the_menu_showed(make_engine, simulator, settings):
    """WaveSpeed raises v3 after the menus were quoted: until the quote's hour is up the user
    pays what they were shown (the operator carries the difference that long)."""
    engine = await make_engine(offering(settings, "*v3.0-pro*"))
    five = Params(prompt=PROMPT, duration=5)
    shown = engine.quote("animate", "v3", five)
    assert shown == 3 and "v3.0-pro 3 credits per 5 s" in engine.price_text()
    simulator.set_base_price(V3, "0.9")
    answer = await engine.accept(request("v3"))
    assert answer.job.cost == shown and answer.job.quote_usd == Decimal("0.56")
    assert "It costs 3 credits" in answer.text


async def test_a_price_raised_by_a_refresh_is_the_one_charged_and_said_or_refused_plainly(
        make_engine, simulator, settings):
    chosen = offering(settings, "*v3.0-pro*")
    engine = await make_engine(replace(chosen, quota=replace(chosen.quota, daily_credits=4)))
    assert engine.quote("animate", "v3", Params(prompt=PROMPT, duration=5)) == 3  # the menu's price
    simulator.set_base_price(V3, "0.9")
    assert await engine.live.refresh()
    answer = await engine.accept(request("v3"))
    assert answer.job.cost == 4 and "It costs 4 credits; 0 left." in answer.text  # the real price, said
    refused = await engine.accept(request("v3", user(2), duration=10))  # $1.80: 8 credits
    assert refused.text.startswith("You're out of credits: this needs 8 and you have 4.")
    assert await credits_match_ledger(engine.store, daily_credits=4) == 0


async def test_a_refresh_in_one_process_leaves_the_others_quotes_for_their_hour(make_engine, simulator, settings):
    """Two fronts: one reads the new price; the other charges its cached quote (what its menus
    show) until the quote's hour or its own refresh; both charge exactly what they show."""
    chosen = offering(settings, "*v3.0-pro*")
    first = await make_engine(chosen)
    second = await make_engine(chosen)
    five = Params(prompt=PROMPT, duration=5)
    simulator.set_base_price(V3, "0.9")
    assert await first.live.refresh()
    assert first.quote("animate", "v3", five) == (await first.accept(request("v3"))).job.cost == 4
    assert second.quote("animate", "v3", five) == (await second.accept(request("v3", user(2)))).job.cost == 3
    await second.live.catch_up()  # its keeper, when due, takes the newer stored listing and quotes again
    assert second.quote("animate", "v3", five) == (await second.accept(request("v3", user(3)))).job.cost == 4


async def test_a_refused_quote_does_not_put_other_requests_on_the_catalog_cost(make_engine, simulator, settings):
    engine = await make_engine(offering(settings, "*v3.0-pro*"))
    simulator.fail_next("price", 400, 1401, message="invalid duration")  # this request's inputs only
    first = await engine.accept(request("v3", duration=7))
    assert first.job.quote_usd is None and first.job.cost == 6  # no quote: 2 started 5 s at 3
    second = await engine.accept(request("v3", user(2), duration=8))
    assert second.job.quote_usd == Decimal("0.896") and second.job.cost == 4  # quoted at once


# --- a database copied to PostgreSQL and back ----------------------------------------------------


async def test_a_copy_keeps_the_listing_and_the_quotes_and_a_start_on_it_without_network_serves_them(
        make_engine, courier, simulator, settings, pg_url):
    if on_postgres_settings(settings):
        pytest.skip("copies a SQLite database")
    simulator.job_seconds = 1.5
    chosen = offering(settings, "*v3.0-pro*", credit_usd="0.1")
    old = await make_engine(chosen, max_concurrent=1)
    blocker = await old.accept(request("v2.1", user(2)))
    queued = await old.accept(request("v3", duration=7))
    assert queued.job.cost == 8 and queued.job.quote_usd == Decimal("0.784")
    await until(lambda: _processing(old, blocker.job.id))
    listing = await old.store.model_listing()
    await old.close()

    await copy_between(settings.storage.path, pg_url, force=False, now=time.time())
    simulator.fail_next("models", 503, times=100)  # the copy's listing is due, and unreadable
    moved = replace(chosen, storage=replace(chosen.storage, url=pg_url, path=str(Path(settings.storage.path)
                                                                                  .with_name("unused.sqlite"))),
                    models=replace(chosen.models, refresh_hours=0.0001))
    new = await make_engine(moved, max_concurrent=1)
    assert new.catalog.offers(V3)  # from the copied listing, not the built-in one
    assert await new.store.model_listing() == listing
    for job_id in (blocker.job.id, queued.job.id):
        assert (await courier.outcome(job_id))[0] == "delivered"
        await settled(new, job_id)
    job = await new.store.job(queued.job.id)
    assert job.quote_usd == Decimal("0.784") and job.cost == 8
    assert await credits_match_ledger(new.store) == 92
    await new.close()

    back = Path(settings.storage.path).with_name("back.sqlite")
    await copy_between(pg_url, str(back), force=False, now=time.time())
    again = await make_engine(replace(moved, storage=replace(moved.storage, url="", path=str(back))))
    assert again.catalog.offers(V3) and await again.store.model_listing() == listing
    assert (await again.store.job(queued.job.id)).quote_usd == Decimal("0.784")
    assert await credits_match_ledger(again.store) == 92
    assert len(simulator.submissions) == len(simulator.tasks) == 2


def on_postgres_settings(settings) -> bool:
    return bool(settings.storage.url)


async def _processing(engine, job_id: int) -> bool:
    job = await engine.store.job(job_id)
    return job.state == JobState.PROCESSING and bool(job.prediction_id)
