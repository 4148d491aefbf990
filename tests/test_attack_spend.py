"""Attacks on the money and process side of #17 (spend caps, alerts, prompt rules).

The tests of these defects failed before their fixes: a pattern that
backtracks on the text a user chose froze the whole bot; a blocked word hidden behind
full-width letters, zero-width characters or combining marks went through; an unquoted
job cost the cap one amount and /stats and /metrics another; an admin alert that never
answered held up a stop (SIGTERM); requests made before a reset and written after it
(waiting for the spend lock) overshot the day before's cap; on Telegram, /avatar asked for
the voice note and a menu press used up its menu before the chat's cap refused them.
The others are checks of what held (races at a cap's edge, resets, takeovers, downloads)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.telegram import TelegramAdapter
from bot import messages
from bot.catalog import BUILT_IN, Params
from bot.config import ModerationSettings, SpendSettings
from bot.engine import Engine
from bot.jobs import Accepted, GenerationRequest, JobState, Rejected, UserRef
from bot.store import open_store
from bot.wavespeed import WaveSpeedClient
from tests import test_restart as restart
from tests.backends import query, raw_sql
from tests.conftest import user
from tests.fake_telegram import FakeTelegram
from tests.helpers import image_bytes, settled

pytestmark = pytest.mark.both_backends
TG_TOKEN = "123456:ATTACK-spend-SECRET"


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
    "a n\u0336a\u0336k\u0336e\u0336d\u0336 man",  # struck through with combining marks
    "a nakéd man",  # an accent
    "celeb\u200b deepfake",  # a pattern too
])
async def test_a_blocked_word_hidden_by_unicode_tricks_is_refused(make_engine, settings, simulator, prompt):
    engine = await make_engine(moderated(settings, words=["naked"], patterns=[r"celeb\w*\s+deepfake"]))
    answer = await engine.accept(animate(prompt))
    assert isinstance(answer, Rejected) and answer.text == messages.PROMPT_BLOCKED
    assert "naked" not in answer.text.lower() and "deepfake" not in answer.text.lower()
    assert simulator.submissions == []


async def test_a_pattern_with_an_accent_still_matches_the_text_as_typed(make_engine, settings):
    engine = await make_engine(moderated(settings, patterns=[r"pornô"]))
    answer = await engine.accept(animate("un pornô"))
    assert isinstance(answer, Rejected) and answer.text == messages.PROMPT_BLOCKED


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
        make_engine, settings, simulator):
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

    started = time.monotonic()
    try:
        await asyncio.wait_for(engine.stop(), 20)
    except TimeoutError:
        pytest.fail("a stop waited on an admin alert that never ends")
    assert time.monotonic() - started < 10, "a stop waited on an alert for longer than a lease"


# --- more: checks of what held, and (further down) more defects found ---------------------

V3 = "kwaivgi/kling-v3.0-pro/image-to-video"


def v3_for(who) -> GenerationRequest:
    return GenerationRequest(who, "animate", image_bytes(800, 600), Params(prompt="a cat", duration=5),
                             model="v3", reply_to={"chat": 1})


async def test_one_user_racing_two_engines_at_the_caps_edge_keeps_the_cap_and_the_ledger(
        make_engine, settings, simulator):
    simulator.set_base_price(V3, "1")
    chosen = replace(settings, spend=SpendSettings(daily_usd=Decimal("3.5")),
                     quota=replace(settings.quota, daily_credits=100, max_jobs_per_user=20))
    one, two = await make_engine(chosen, start=False), await make_engine(chosen, start=False)
    for engine in (one, two):
        await engine.start(drive=False)
    await one.accept(v3_for(user()))  # both know the user's row: the one-write accept is tempting

    answers = await asyncio.gather(*(engine.accept(v3_for(user())) for _ in range(6) for engine in (one, two)))

    assert sum(isinstance(a, Accepted) for a in answers) == 2  # 3 in all at $1 under $3.50
    assert await one.store.spend_usd(0.0) == Decimal(3)
    jobs = await one.store.user_jobs(user().key, active_only=False, limit=50)
    rows = await raw_sql(one.store, "select daily_left, bonus from users where key = ?", [user().key])
    ledger = await raw_sql(one.store, "select daily_delta, bonus_delta from ledger where user_key = ?", [user().key])
    assert len(jobs) == 3 and int(rows[0]["daily_left"]) == 100 - sum(job.cost for job in jobs)
    assert sum(int(r["daily_delta"]) + int(r["bonus_delta"]) for r in ledger) == -sum(job.cost for job in jobs)


async def test_the_daily_cap_resets_at_reset_hour_utc_not_at_midnight(settings, simulator, courier):
    simulator.set_base_price(V3, "1")
    chosen = replace(settings, spend=SpendSettings(daily_usd=Decimal("1.5")),
                     quota=replace(settings.quota, daily_credits=100, max_jobs_per_user=20, reset_hour_utc=5))
    moment = [datetime(2026, 3, 10, 4, 59, 58, tzinfo=UTC).timestamp()]
    ws = chosen.wavespeed
    engine = Engine(chosen, await open_store(chosen.storage.database), WaveSpeedClient(ws.base_url, ws.api_key),
                    clock=lambda: moment[0])
    engine.register("test", courier)
    try:
        await engine.start(drive=False)
        moment[0] -= 3600  # 03:59: the day that began yesterday at 05:00
        assert isinstance(await engine.accept(v3_for(user())), Accepted)
        moment[0] += 3600 + 0.5  # 04:59:58.5, still that day
        refused = await engine.accept(v3_for(user()))
        assert isinstance(refused, Rejected) and "resets at 05:00 UTC" in refused.text
        moment[0] += 3  # 05:00:01.5: a new day
        assert isinstance(await engine.accept(v3_for(user())), Accepted)
        assert isinstance(await engine.accept(v3_for(user())), Rejected)
    finally:
        await engine.close()


@pytest.fixture
async def fake_telegram():
    fake = FakeTelegram(TG_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


def on_telegram(settings, fake, admins=(), **spend: str):
    return replace(settings, spend=SpendSettings(**{cap: Decimal(usd) for cap, usd in spend.items()}),
                   quota=replace(settings.quota, daily_credits=100), telegram=replace(
                       settings.telegram, token=TG_TOKEN, base_url=fake.base_url,
                       base_file_url=fake.base_file_url, admins=list(admins)))


def said_to(fake, chat) -> list[str]:
    """What the bot wrote in a chat: messages sent and edited."""
    return [c["params"]["text"] for c in fake.calls if c["method"] in ("sendMessage", "editMessageText")
            and int(c["params"]["chat_id"]) == chat]


def downloads(fake) -> int:
    return sum(path.startswith("/file/") for path in fake.paths)


async def test_a_telegram_admin_who_never_started_the_bot_does_not_cost_the_others_their_alert(
        settings, adapter_runner, simulator, fake_telegram):
    never_started, admin, member, group = 1001, 1002, 1003, -100500
    simulator.set_base_price(BUILT_IN.resolve_model(None, "effect").id, "1")
    fake_telegram.blocked.add(never_started)  # 403 "Forbidden": the bot may not write first
    await adapter_runner(on_telegram(settings, fake_telegram, [never_started, admin], daily_usd="0.5"),
                         TelegramAdapter)
    fake_telegram.user_message(group, member, caption="/effect hula", photo=image_bytes(800, 600))

    async with asyncio.timeout(20):
        while not said_to(fake_telegram, admin) or \
                not any("spending cap is reached" in t for t in said_to(fake_telegram, group)):
            await asyncio.sleep(0.05)
    assert "100% used" in said_to(fake_telegram, admin)[0]
    assert TG_TOKEN not in "".join(said_to(fake_telegram, admin))


async def test_a_request_over_the_places_cap_downloads_nothing_and_costs_nothing(
        settings, adapter_runner, simulator, fake_telegram):
    member, group, other_group = 1003, -100500, -100600
    simulator.set_base_price(BUILT_IN.resolve_model(None, "effect").id, "1")
    engine, _ = await adapter_runner(on_telegram(settings, fake_telegram, daily_usd_per_place="1.5"),
                                     TelegramAdapter)
    fake_telegram.user_message(group, member, caption="/effect hula", photo=image_bytes(800, 600))
    async with asyncio.timeout(20):
        while not await engine.store.user_jobs(f"telegram:{member}", active_only=False):
            await asyncio.sleep(0.05)  # the first photo is fetched and its job accepted
    fetched, asked = downloads(fake_telegram), len(fake_telegram.calls_to("getFile"))
    assert fetched >= 1
    left = (await engine.balance(UserRef("telegram", str(member), ""))).total

    fake_telegram.user_message(group, member, caption="/effect hula", photo=image_bytes(800, 600))
    async with asyncio.timeout(20):
        while not any("This place's daily spending cap" in t for t in said_to(fake_telegram, group)):
            await asyncio.sleep(0.05)

    assert downloads(fake_telegram) == fetched and len(fake_telegram.calls_to("getFile")) == asked
    assert (await engine.balance(UserRef("telegram", str(member), ""))).total == left
    assert len(await engine.store.user_jobs(f"telegram:{member}", active_only=False)) == 1
    # Another chat has its own cap.
    fake_telegram.user_message(other_group, member, caption="/effect hula", photo=image_bytes(800, 600))
    async with asyncio.timeout(20):
        while len(await engine.store.user_jobs(f"telegram:{member}", active_only=False)) < 2:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("kill_while", ["submitting", "delivering"])
async def test_a_job_killed_mid_submit_or_mid_delivery_is_charged_once_its_quote(
        tmp_path, simulator, database, kill_while):

    config, events = restart._config(tmp_path, simulator.base_url, database), tmp_path / "events.jsonl"
    simulator.job_seconds = 0.3
    if kill_while == "submitting":  # WaveSpeed creates the task; its answer never arrives
        simulator.fail_next("submit", kind="accept_hang", delay=60)
    reached = {"submitting": lambda: simulator.tasks and restart._job_state_is(database, ("submitting", "reserved")),
               "delivering": lambda: any(e["event"] == "delivering" for e in restart._events(events))}[kill_while]
    first = await restart._spawn(config, events, "--submit", "1",
                                 *(["--hang-delivery"] if kill_while == "delivering" else []))
    try:
        await restart._until(reached)
    finally:
        first.kill()  # SIGKILL
        await first.wait()
    second = await restart._spawn(config, events)
    try:
        await restart._until(lambda: restart._all_done(database, 1), timeout=45)
    finally:
        second.kill()
        await second.wait()

    [(state, quote, charged, failure)] = await query(
        database, "select state, quote_usd, charged_usd, failure from jobs")
    assert state == "done" and failure is None
    assert charged is not None and Decimal(str(charged)) == Decimal(str(quote))  # once: the task it made
    assert len(simulator.tasks) == 1
    store = await open_store(database)
    try:
        assert await store.spend_usd(0.0) == Decimal(str(quote))
    finally:
        await store.close()


async def test_an_avatar_over_the_places_cap_is_refused_before_asking_for_the_voice_note(
        settings, adapter_runner, simulator, fake_telegram):
    member, group = 1003, -100500
    await adapter_runner(on_telegram(settings, fake_telegram, daily_usd_per_place="0.01"), TelegramAdapter)
    photo = fake_telegram.user_message(group, member, photo=image_bytes(800, 600), push=False)
    fake_telegram.user_message(group, member, text="/avatar smiling", reply_to=photo)

    async with asyncio.timeout(20):
        while not said_to(fake_telegram, group):
            await asyncio.sleep(0.05)
    [answer] = said_to(fake_telegram, group)
    assert "This place's daily spending cap is reached" in answer  # not "reply with a voice note"


async def test_requests_made_before_the_reset_and_checked_after_it_count_to_the_day_they_were_made(
        settings, simulator, courier):
    # Requests made at 04:59:59 wait for the spend lock (another accept holds it) until
    # past the 05:00 reset. They count to the day they were made (their created_at): they
    # must be checked against that day's cap, not against the new day's empty one.
    simulator.set_base_price(V3, "1")
    chosen = replace(settings, spend=SpendSettings(daily_usd=Decimal("1.5")),
                     quota=replace(settings.quota, daily_credits=100, max_jobs_per_user=20, reset_hour_utc=5))
    day_start = datetime(2026, 3, 10, 5, tzinfo=UTC).timestamp() - 86400
    moment = [day_start + 86400 - 1.0]
    ws = chosen.wavespeed
    engine = Engine(chosen, await open_store(chosen.storage.database), WaveSpeedClient(ws.base_url, ws.api_key),
                    clock=lambda: moment[0])
    engine.register("test", courier)
    held, release = asyncio.Event(), asyncio.Event()

    async def another_accept_holding_the_lock():
        async with engine.store.transaction():
            await engine.store.lock_spend()
            held.set()
            await release.wait()

    try:
        await engine.start(drive=False)
        holder = asyncio.create_task(another_accept_holding_the_lock())
        await held.wait()
        accepts = [asyncio.create_task(engine.accept(v3_for(user(n)))) for n in (1, 2)]
        await asyncio.sleep(1.5)  # both checked as things stood, media ready, their rows made: at the lock
        moment[0] += 2.0  # 05:00:01: a new day
        release.set()
        await holder
        answers = await asyncio.gather(*accepts)

        assert sum(isinstance(answer, Accepted) for answer in answers) == 1, answers
        assert await engine.store.spend_usd(day_start) <= Decimal("1.5")
    finally:
        await engine.close()


async def test_a_photo_menu_press_over_the_places_cap_is_a_toast_and_keeps_the_menu(
        settings, adapter_runner, simulator, fake_telegram):
    member, group = 1003, -100500
    await adapter_runner(on_telegram(settings, fake_telegram, daily_usd_per_place="0.01"), TelegramAdapter)
    fake_telegram.user_message(group, member, photo=image_bytes(800, 600), caption="@kling_test_bot hi")
    async with asyncio.timeout(20):
        while not any("Effects cost" in text for text in said_to(fake_telegram, group)):
            await asyncio.sleep(0.05)
    [menu] = [m for (chat, _), m in sorted(fake_telegram.messages.items()) if chat == group
              and m["from"]["id"] == fake_telegram.bot_user["id"] and "Effects cost" in m.get("text", "")]
    first = next(b["callback_data"] for row in menu["reply_markup"]["inline_keyboard"] for b in row
                 if b["callback_data"].startswith("fx:"))

    fake_telegram.press_button(member, menu, first)
    async with asyncio.timeout(20):
        while not fake_telegram.calls_to("answerCallbackQuery"):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)

    [toast] = [c["params"] for c in fake_telegram.calls_to("answerCallbackQuery")]
    assert "spending cap" in toast.get("text", "") and toast.get("show_alert")
    assert fake_telegram.calls_to("editMessageText") == []  # the menu stays, for after the reset
    assert downloads(fake_telegram) == 0
