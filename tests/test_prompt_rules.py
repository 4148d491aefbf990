"""Prompt rules (issue #17, item 4): ``[moderation] blocked_words`` / ``blocked_patterns``
refuse a prompt or negative prompt before any cost (no quote, no download, no credit),
with a refusal that does not repeat what matched; WaveSpeed's own content filter (code
1200) is refunded and counted as failure "moderated", charging nothing."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import discord
import pytest

from adapters.discord import DiscordAdapter
from adapters.telegram import TelegramAdapter
from bot import messages
from bot.catalog import Params
from bot.config import ConfigError, ModerationSettings, load_settings
from bot.jobs import Accepted, GenerationRequest, JobState, Rejected
from tests.conftest import user
from tests.fake_discord import GUILD, FakeDiscord
from tests.fake_telegram import FakeTelegram
from tests.helpers import image_bytes, settled
from tests.test_spend_alerts import until

pytestmark = pytest.mark.both_backends
WORDS = ["Gorefest", "naked"]
PATTERNS = [r"celeb\w*\s+deepfake", r"\bkill(ing)?\s+\w+"]
DC_TOKEN = "MTIz.prompt-rules-discord.SECRET"
TG_TOKEN = "123456:PROMPT-rules-telegram-SECRET"
ALICE = 600000000000000001
TG_ALICE = 1001


def quotes_for(simulator, prompt: str) -> list[dict]:
    """The quotes WaveSpeed was asked for requests with this prompt."""
    return [r for r in simulator.price_requests if r["inputs"].get("prompt") == prompt]


def ruled(settings):
    return replace(settings, moderation=ModerationSettings(blocked_words=WORDS, blocked_patterns=PATTERNS))


def animate(prompt: str, negative: str | None = None) -> GenerationRequest:
    return GenerationRequest(user(), "animate", image_bytes(800, 600),
                             Params(prompt=prompt, negative_prompt=negative), reply_to={"chat": 1})


@pytest.mark.parametrize(("prompt", "negative", "matched"), [
    ("a NAKED man runs", None, "NAKED"),  # a word, in any case
    ("she dances", "gorefest", "gorefest"),  # in the negative prompt too
    ("a Celebrity   DEEPFAKE of a singer", None, "DEEPFAKE"),  # a pattern, in any case
    ("killing time on a bench", None, "killing time"),
])
async def test_a_blocked_prompt_is_refused_before_any_cost_without_repeating_the_match(
        make_engine, simulator, settings, prompt, negative, matched):
    engine = await make_engine(ruled(settings))
    answer = await engine.accept(animate(prompt, negative))
    assert isinstance(answer, Rejected) and answer.text == messages.PROMPT_BLOCKED
    assert matched.lower() not in answer.text.lower() and prompt.lower() not in answer.text.lower()
    assert quotes_for(simulator, prompt) == [] and simulator.submissions == []  # not even a quote was asked
    assert (await engine.balance(user())).total == 10
    assert await engine.store.user_jobs(user().key, active_only=False) == []
    # What a chat asks before downloading the photo says so already.
    before = await engine.precheck(user(), "animate", None, Params(prompt=prompt, negative_prompt=negative))
    assert isinstance(before, Rejected) and before.text == messages.PROMPT_BLOCKED


@pytest.mark.parametrize("prompt", ["a nakedness study", "she skills a fish", "a Gorefestival poster", "deepfake"])
async def test_words_match_whole_words_and_patterns_only_what_they_say(make_engine, settings, prompt):
    engine = await make_engine(ruled(settings))
    assert isinstance(await engine.accept(animate(prompt)), Accepted)


async def test_a_prompt_button_on_a_result_is_checked_too(make_engine, courier, settings):
    from tests.conftest import press
    engine = await make_engine(ruled(settings))
    first = await engine.accept(animate("she waves"))
    await courier.outcome(first.job.id)
    again = await engine.rerun(press(user()), first.job.id, reply_to={"chat": 1}, prompt="now naked")
    assert isinstance(again, Rejected) and again.text == messages.PROMPT_BLOCKED
    assert (await engine.balance(user())).total == 10 - first.job.cost


def test_a_pattern_that_does_not_compile_is_one_line_at_load(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[moderation]\nblocked_patterns = ["(unclosed"]\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(config, env={})
    assert "[moderation] blocked_patterns: '(unclosed' is not a valid regular expression" in str(raised.value)
    assert "\n" not in str(raised.value)


async def test_wavespeeds_content_filter_refusal_is_refunded_and_counted_as_moderated(
        make_engine, courier, simulator, settings):
    engine = await make_engine()
    simulator.plan_outcome("moderated")  # WaveSpeed answers the submit 400, code 1200
    answer = await engine.accept(animate("she waves"))
    kind, reason = await courier.outcome(answer.job.id)
    job = await settled(engine, answer.job.id)
    assert kind == "failed" and messages.MODERATED in reason
    assert job.state == JobState.FAILED and job.failure == "moderated" and job.charged_usd == Decimal(0)
    assert (await engine.balance(user())).total == 10  # refunded
    assert await engine.store.spend_usd(0.0) == Decimal(0)


@pytest.fixture
async def fake_discord():
    fake = FakeDiscord(DC_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


async def test_discord_refuses_a_blocked_prompt_before_fetching_the_photo(
        settings, fake_discord, adapter_runner, simulator):
    chosen = replace(ruled(settings), discord=replace(
        settings.discord, token=DC_TOKEN, guild_ids=[GUILD], api_base_url=fake_discord.api_base_url,
        progress_interval=0.0))
    original_base = discord.http.Route.BASE
    try:
        _, adapter = await adapter_runner(chosen, DiscordAdapter, launch="prepare")
        attachment = fake_discord.attachment(image_bytes(640, 480))
        payload = fake_discord.slash("animate", [{"name": "image", "type": 11, "value": attachment["id"]},
                                                 {"name": "prompt", "type": 3, "value": "a naked dancer"}],
                                     user=ALICE, attachments=[attachment])
        adapter.client._connection.parse_interaction_create(payload)
        [answer] = await until(lambda: [c["json"] for c in fake_discord.to("/interactions/")
                                        if payload["token"] in c["path"]])
    finally:
        discord.http.Route.BASE = original_base
    assert answer["data"]["content"] == messages.PROMPT_BLOCKED
    assert fake_discord.to("/attachments/") == [] and quotes_for(simulator, "a naked dancer") == []


@pytest.fixture
async def telegram():
    fake = FakeTelegram(TG_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


async def test_telegram_refuses_a_blocked_prompt_before_downloading_the_photo(
        settings, telegram, adapter_runner, simulator):
    chosen = replace(ruled(settings), telegram=replace(
        settings.telegram, token=TG_TOKEN, base_url=telegram.base_url, base_file_url=telegram.base_file_url,
        progress_interval=0.0))
    await adapter_runner(chosen, TelegramAdapter)
    telegram.user_message(TG_ALICE, TG_ALICE, caption="/animate a celebrity deepfake please", photo=image_bytes())
    texts = await telegram.wait_for(lambda: [c["params"]["text"] for c in telegram.calls_to("sendMessage")
                                             + telegram.calls_to("editMessageText")
                                             if c["params"]["text"] == messages.PROMPT_BLOCKED])
    assert texts and telegram.calls_to("getFile") == []
    assert quotes_for(simulator, "a celebrity deepfake please") == []
