"""The fakes refuse what the real chat services refuse: real PTB and discord.py requests.

Each refused request is also recorded in the fake's ``violations``; these tests send bad
requests on purpose, so they check what was recorded and then clear it (the autouse
fixture in conftest.py asserts every fake ends a test without violations).
"""

from __future__ import annotations

import io

import discord
import pytest
from telegram import Bot, BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
from telegram.error import BadRequest, EndPointNotFound

from tests import spec_check
from tests.fake_discord import APP_ID, CHANNEL, FakeDiscord
from tests.fake_telegram import FakeTelegram

TG_TOKEN = "123456:SPEC-CHECK"
DC_TOKEN = "MTIz.spec-check.SECRET"
CHAT, USER = 42, 7
MiB = 1024 * 1024


def recorded(fake: FakeTelegram | FakeDiscord, *words: str) -> list[str]:
    """The fake's violations, which must each mention ``words``; cleared (sent on purpose)."""
    found = list(fake.violations)
    fake.violations.clear()
    assert found, "nothing was recorded"
    for violation in found:
        assert all(word in violation for word in words), violation
    return found


# --- Telegram: the real python-telegram-bot Bot ----------------------------------------

@pytest.fixture
async def telegram():
    fake = FakeTelegram(TG_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def bot(telegram):
    async with Bot(TG_TOKEN, base_url=telegram.base_url, base_file_url=telegram.base_file_url) as bot:
        yield bot


def keyboard(*buttons: InlineKeyboardButton) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([list(buttons)])


@pytest.mark.parametrize("data", ["x" * 65, "é" * 33], ids=["65-ascii", "33-chars-66-bytes"])
async def test_callback_data_over_64_bytes_is_refused(bot, telegram, data):
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(CHAT, "Pick", reply_markup=keyboard(InlineKeyboardButton("a", callback_data=data)))
    recorded(telegram, "sendMessage", "callback_data", "1-64 bytes")


async def test_a_conforming_message_passes(bot, telegram):
    photo = telegram.user_message(CHAT, USER, text="hi")
    sent = await bot.send_message(
        CHAT, "x" * 4096, reply_parameters=ReplyParameters(photo["message_id"]),
        reply_markup=keyboard(InlineKeyboardButton("é", callback_data="é" * 32),
                              InlineKeyboardButton("site", url="https://example.com")))
    assert sent.text == "x" * 4096 and sent.reply_to_message.message_id == photo["message_id"]
    await bot.set_my_commands([BotCommand("effect", "Animate a photo"), BotCommand("help_2", "Help")])
    await bot.answer_callback_query("1", text="x" * 200)
    assert telegram.violations == []


@pytest.mark.parametrize(("text", "error"), [("x" * 4097, "Message is too long"), ("", "Message text is empty")])
async def test_message_text_must_be_1_to_4096_characters(bot, telegram, text, error):
    with pytest.raises(BadRequest, match=error):
        await bot.send_message(CHAT, text)
    recorded(telegram, "sendMessage", "text", "1-4096 characters")


async def test_a_button_needs_exactly_one_action(bot, telegram):
    with pytest.raises(BadRequest, match=r"(?i)text buttons are unallowed"):
        await bot.send_message(CHAT, "Pick", reply_markup=keyboard(InlineKeyboardButton("no action")))
    recorded(telegram, "inline_keyboard[0][0]", "exactly one")


@pytest.mark.parametrize(("command", "rule"), [
    (BotCommand("Effect", "Animate"), "only lowercase English letters"),
    (BotCommand("x" * 33, "Animate"), "1-32 characters"),
    (BotCommand("effect", "x" * 257), "1-256 characters"),
])
async def test_bot_commands_follow_the_spec(bot, telegram, command, rule):
    with pytest.raises(BadRequest):
        await bot.set_my_commands([command])
    recorded(telegram, "setMyCommands", "commands[0]", rule)


async def test_callback_answer_text_is_at_most_200_characters(bot, telegram):
    with pytest.raises(BadRequest, match=r"(?i)message_too_long"):
        await bot.answer_callback_query("1", text="x" * 201)
    recorded(telegram, "answerCallbackQuery", "0-200 characters")


async def test_nested_fields_have_the_spec_types(bot, telegram):
    with pytest.raises(BadRequest, match=r"reply_parameters\.message_id"):
        await bot.send_message(CHAT, "hi", api_kwargs={"reply_parameters": {"message_id": "first"}})
    recorded(telegram, "reply_parameters.message_id must be Integer")


async def test_unknown_method_is_not_found(bot, telegram):
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendNothing", api_kwargs={"chat_id": CHAT})
    recorded(telegram, "unknown method 'sendNothing'")


async def test_method_names_are_case_insensitive_like_telegrams(bot, telegram):
    await bot.do_api_request("SENDMESSAGE", api_kwargs={"chat_id": CHAT, "text": "hi"})
    assert telegram.violations == []


async def test_unknown_parameter_is_accepted_but_recorded(bot, telegram):
    await bot.send_message(CHAT, "hi", api_kwargs={"reply_murkup": "{}"})  # Telegram ignores it silently
    recorded(telegram, "unknown parameter 'reply_murkup'")


async def test_check_specs_false_turns_the_checks_off(bot, telegram):
    telegram.check_specs = False
    await bot.send_message(CHAT, "x" * 5000)
    assert telegram.violations == []


# --- Discord: the real discord.py client and webhooks ----------------------------------

@pytest.fixture
async def fake_discord(monkeypatch):
    fake = FakeDiscord(DC_TOKEN)
    await fake.start()
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base_url)
    yield fake
    await fake.close()


@pytest.fixture
async def client(fake_discord):
    client = discord.Client(intents=discord.Intents.none())
    await client.login(DC_TOKEN)
    yield client
    await client.close()


async def interaction(fake: FakeDiscord, size_limit: int = 25 * MiB) -> dict:
    payload = fake.interaction(2, {"id": "1", "name": "effect", "type": 1}, user=USER, size_limit=size_limit)
    await fake.dispatch("INTERACTION_CREATE", payload)
    return payload


def upload(size: int) -> discord.File:
    return discord.File(io.BytesIO(b"\0" * size), "kling.mp4")


async def test_followup_over_2000_characters_is_an_invalid_form_body(fake_discord, client):
    hook = discord.Webhook.partial(APP_ID, (await interaction(fake_discord))["token"], client=client)
    with pytest.raises(discord.HTTPException) as refused:
        await hook.send("x" * 2001)
    assert (refused.value.status, refused.value.code) == (400, 50035)
    assert "content" in refused.value.text
    recorded(fake_discord, "POST /webhooks/", "content")
    await hook.send("x" * 2000)
    assert fake_discord.violations == []


async def test_upload_over_the_interactions_limit_is_too_large(fake_discord, client):
    hook = discord.Webhook.partial(APP_ID, (await interaction(fake_discord, size_limit=4096))["token"], client=client)
    with pytest.raises(discord.HTTPException) as refused:
        await hook.send("video", file=upload(4097))
    assert (refused.value.status, refused.value.code) == (413, 40005)
    recorded(fake_discord, "uploads total 4097 bytes", "4096")
    await hook.send("video", file=upload(4096))
    assert fake_discord.violations == []


async def test_channel_upload_limit_is_10_mib(fake_discord, client):
    channel = client.get_partial_messageable(CHANNEL)
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send(file=upload(10 * MiB + 1))
    assert (refused.value.status, refused.value.code) == (413, 40005)
    recorded(fake_discord, f"POST /channels/{CHANNEL}/messages", "uploads total")
    await channel.send(file=upload(10 * MiB))
    assert fake_discord.violations == []


async def test_a_second_initial_response_is_refused(fake_discord, client):
    payload = await interaction(fake_discord)
    await discord.Interaction(data=payload, state=client._connection).response.defer()
    again = discord.Interaction(data=payload, state=client._connection)  # e.g. another process
    with pytest.raises(discord.HTTPException) as refused:
        await again.response.send_message("hello")
    assert (refused.value.status, refused.value.code) == (400, 40060)
    recorded(fake_discord, "/callback", "second initial response")


async def test_a_custom_id_over_100_characters_is_refused(fake_discord, client):
    view = discord.ui.View()
    view.add_item(discord.ui.Button(label="Again", custom_id="x" * 101))
    with pytest.raises(discord.HTTPException) as refused:
        await discord.Interaction(data=await interaction(fake_discord), state=client._connection
                                  ).response.send_message("done", view=view)
    assert (refused.value.status, refused.value.code) == (400, 50035)
    recorded(fake_discord, "custom_id")


def button(n: int, custom_id: str | None = None) -> dict:
    return {"type": 2, "style": 1, "label": f"b{n}", "custom_id": custom_id or f"c{n}"}


def rows(count: int, per_row: int) -> list[dict]:
    return [{"type": 1, "components": [button(r * 10 + i) for i in range(per_row)]} for r in range(count)]


def select(options: int) -> dict:
    return {"type": 1, "components": [{"type": 3, "custom_id": "pick", "options": [
        {"label": f"o{i}", "value": f"v{i}"} for i in range(options)]}]}


@pytest.mark.parametrize(("message", "path"), [
    ({"content": "x", "components": rows(6, 1)}, ("components",)),
    ({"content": "x", "components": rows(1, 6)}, ("components", 0, "components")),
    ({"content": "x", "components": [{"type": 1, "components": [button(1, "x" * 101)]}]},
     ("components", 0, "components", 0, "custom_id")),
    ({"content": "x", "components": [select(26)]}, ("components", 0, "components", 0, "options")),
    ({"content": "x" * 2001}, ("content",)),
])
def test_message_limits(message, path):
    problems = spec_check.DiscordRules().problems("POST", f"/webhooks/{APP_ID}/token", message, [])
    assert path in [p.path for p in problems]
    assert all(p.status == 400 for p in problems)


def test_messages_at_the_limits_pass():
    rules = spec_check.DiscordRules()
    for message in ({"content": "x" * 2000, "components": rows(5, 5)}, {"components": [select(25)]}):
        assert rules.problems("POST", f"/webhooks/{APP_ID}/token", message, []) == []
    autocomplete = {"type": 8, "data": {"choices": [{"name": "Hula", "value": "v" * 100}] * 25}}
    assert rules.problems("POST", "/interactions/1/token/callback", autocomplete, []) == []


def test_autocomplete_choices_are_limited():
    too_many = {"type": 8, "data": {"choices": [{"name": "Hula", "value": "hula"}] * 26}}
    too_long = {"type": 8, "data": {"choices": [{"name": "Hula", "value": "v" * 101}]}}
    rules = spec_check.DiscordRules()
    assert [p.path for p in rules.problems("POST", "/interactions/1/t/callback", too_many, [])] == [("data", "choices")]
    assert [p.path for p in rules.problems("POST", "/interactions/2/t/callback", too_long, [])] == [
        ("data", "choices", 0, "value")]


def test_unknown_routes_and_methods():
    rules = spec_check.DiscordRules()
    assert [p.status for p in rules.problems("POST", "/interactions/1/t/nothing", {}, [])] == [404]
    assert [p.status for p in rules.problems("DELETE", "/interactions/1/t/callback", None, [])] == [405]
    assert rules.problems("GET", "/users/@me", None, []) == []
