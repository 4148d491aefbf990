"""Attacks on the money and process side of #17 (spend caps, alerts, prompt rules).

Each test here failed before the fix it names: a pattern that backtracks on the text a
user chose froze the whole bot; a blocked word hidden behind full-width letters or a
zero-width character went through; an unquoted job cost the cap one amount and /stats
and /metrics another; an admin alert that never answered held up a stop (SIGTERM)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from decimal import Decimal

import pytest

from bot import messages
from bot.catalog import Params
from bot.config import ModerationSettings, SpendSettings
from bot.jobs import Accepted, GenerationRequest, JobState, Rejected
from tests.conftest import user
from tests.helpers import image_bytes, settled

pytestmark = pytest.mark.both_backends


def animate(prompt: str) -> GenerationRequest:
    return GenerationRequest(user(), "animate", image_bytes(800, 600), Params(prompt=prompt), reply_to={"chat": 1})


def moderated(settings, words=(), patterns=()):
    return replace(settings, moderation=ModerationSettings(blocked_words=list(words), blocked_patterns=list(patterns)))


async def longest_stall(work):
    """``work``'s answer and the longest the event loop went without a turn meanwhile."""
    stalls, beat = [0.0], [time.monotonic()]

    async def heartbeat():
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            stalls[0] = max(stalls[0], now - beat[0])
            beat[0] = now

    ticking = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.05)
    try:
        answer = await work
    finally:
        ticking.cancel()
    return answer, stalls[0]


async def test_a_pattern_that_backtracks_on_a_users_prompt_does_not_freeze_the_bot(make_engine, settings, simulator):
    # An operator's innocent-looking pattern, a user's prompt of ~2,500 characters that
    # makes it backtrack (Python's re: seconds with the GIL held; longer prompts: hours).
    engine = await make_engine(moderated(settings, patterns=[r"(a|a)+$"]))
    prompt = "x " * 1200 + "a" * 24 + "!"

    answer, stall = await longest_stall(engine.accept(animate(prompt)))

    assert stall < 0.4, f"the event loop stood still for {stall:.2f} s"
    assert isinstance(answer, Rejected) and answer.text == messages.PROMPT_BLOCKED  # unsure: refused, free
    assert simulator.submissions == [] and (await engine.balance(user())).total == 10


@pytest.mark.parametrize("prompt", [
    "a ｎａｋｅｄ man",  # full-width letters
    "a na\u200bked man",  # a zero-width space inside the word
    "a nak\u200ded man",  # a zero-width joiner
    "a NA\u00adKED man",  # a soft hyphen, in capitals
    "celeb\u200b deepfake",  # a pattern too
])
async def test_a_blocked_word_hidden_by_unicode_tricks_is_refused(make_engine, settings, simulator, prompt):
    engine = await make_engine(moderated(settings, words=["naked"], patterns=[r"celeb\w*\s+deepfake"]))
    answer = await engine.accept(animate(prompt))
    assert isinstance(answer, Rejected) and answer.text == messages.PROMPT_BLOCKED
    assert "naked" not in answer.text.lower() and "deepfake" not in answer.text.lower()
    assert simulator.submissions == []


async def test_an_unquoted_job_counts_the_same_to_the_caps_in_stats_and_in_metrics(make_engine, settings, simulator):
    simulator.fail_next("price", 500, times=50)  # no quote: the catalog's credits are charged
    engine = await make_engine(replace(settings, spend=SpendSettings(daily_usd=Decimal(100))))
    answer = await engine.accept(animate("a cat dances"))
    assert isinstance(answer, Accepted) and answer.job.quote_usd is None
    job = await settled(engine, answer.job.id, timeout=30)
    assert job.state == JobState.DONE
    worth = settings.quota.credit_usd * job.cost

    assert await engine.store.spend_usd(0.0, credit_usd=settings.quota.credit_usd) == worth  # what the caps count
    assert (await engine.stats()).today.spend_usd == worth  # what /stats shows
    totals = await engine.store.metric_totals(credit_usd=settings.quota.credit_usd)  # what /metrics shows
    assert sum(totals.spend_usd.values()) == worth


class HangingAlerts:
    """A platform whose admin alerts never get an answer (a chat API that hangs)."""

    def __init__(self) -> None:
        self.alerts: list[str] = []

    async def alert_admins(self, text: str) -> None:
        self.alerts.append(text)
        await asyncio.sleep(3600)


async def test_an_admin_alert_that_hangs_neither_slows_accepts_nor_holds_up_a_stop(
        make_engine, settings, simulator, monkeypatch):
    monkeypatch.setattr("bot.spend.ALERT_SECONDS", 1.0, raising=False)
    engine = await make_engine(replace(settings, spend=SpendSettings(daily_usd=Decimal("0.01"))), start=False)
    hanging = HangingAlerts()
    engine.register("hanging", hanging)
    await engine.start(drive=False)

    started = time.monotonic()
    answer = await engine.accept(animate("a cat dances"))  # over the cap: the admins hear of 100%
    assert isinstance(answer, Rejected) and time.monotonic() - started < 5
    async with asyncio.timeout(5):
        while not hanging.alerts:
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(engine.stop(), 10)
    except TimeoutError:
        pytest.fail("a stop waited on an admin alert that never ends")
