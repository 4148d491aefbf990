"""Fakes that answer like the real services (#17, item 8), and what the bot does with it.

Telegram refuses getFile above 20 MB and a reply to a message that is gone unless it allows
sending without it; Discord sends its rate limit headers (and 429s a client that ignores
them) and answers an interaction callback 204 unless asked ``with_response``; WaveSpeed's
upload answers say ``type``, ``filename`` and ``size``, and the SDK 2.x upload flow
(``POST /api/v3/media/uploads``, then a PUT of the bytes) works against the simulator.
"""

# The fixtures come from tests/test_telegram.py and tests/test_discord.py, so test
# parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import io
import time

import aiohttp
import pytest
import wavespeed
from telegram import Bot, ReplyParameters
from telegram.error import BadRequest

from bot import messages
from tests import spec_check
from tests.conftest import API_KEY
from tests.fake_discord import APP_ID, RateLimits
from tests.helpers import image_bytes
from tests.test_discord import ALICE as DC_ALICE
from tests.test_discord import BOB as DC_BOB
from tests.test_discord import TOKEN as DC_TOKEN
from tests.test_discord import (  # noqa: F401
    _context_menu,
    _pick,
    dc_settings,
    fake_discord,
    feed,
    run_discord,
    until,
)
from tests.test_telegram import ALICE, GROUP, TOKEN, run_bot, telegram, tg_settings  # noqa: F401
from tests.test_telegram_experience import bot_message, quiet, texts, videos, who

BIG = 21 * 1024 * 1024  # over the 20 MB the Bot API hands to bots


# --- Telegram: getFile over 20 MB ----------------------------------------------------------------

async def test_the_fake_bot_api_refuses_get_file_above_20_mb(telegram):
    small, big = telegram.add_file(b"x" * 10), telegram.add_unsized_file(bytes(BIG))
    async with Bot(TOKEN, base_url=telegram.base_url, base_file_url=telegram.base_file_url) as bot:
        assert (await bot.get_file(small["file_id"])).file_size == 10
        with pytest.raises(BadRequest, match="File is too big"):
            await bot.get_file(big["file_id"])


async def test_a_photo_telegram_will_not_hand_over_is_refused_as_too_big_and_free(run_bot, telegram, simulator):
    """The message tells no size (file_size is optional): only getFile's refusal says it is
    over 20 MB. The user hears that, not "could not download, try again"."""
    engine, _ = await run_bot()
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=bytes(BIG), unsized=True)
    await telegram.wait_for(lambda: len(texts(telegram, "editMessageText")) == 1)
    assert texts(telegram, "editMessageText") == [messages.telegram_file_over_limit("photo")]
    assert (await engine.balance(who(ALICE))).total == 10
    assert simulator.submissions == [] and videos(telegram, ALICE) == []


# --- Telegram: replies to a message that is gone -------------------------------------------------

async def test_the_fake_bot_api_refuses_a_reply_to_a_missing_message_unless_allowed(telegram):
    gone = telegram.user_message(GROUP, ALICE, text="hi", push=False)["message_id"]
    telegram.user_deletes(GROUP, gone)
    async with Bot(TOKEN, base_url=telegram.base_url, base_file_url=telegram.base_file_url) as bot:
        with pytest.raises(BadRequest, match="Message to be replied not found"):
            await bot.send_message(GROUP, "hello", reply_parameters=ReplyParameters(gone))
        sent = await bot.send_message(GROUP, "hello", reply_parameters=ReplyParameters(
            gone, allow_sending_without_reply=True))
        with pytest.raises(BadRequest, match="Message to be replied not found"):  # not in another chat
            await bot.send_message(ALICE, "hello", reply_parameters=ReplyParameters(
                gone, chat_id=GROUP, allow_sending_without_reply=True))
    assert sent.reply_to_message is None and sent.text == "hello"


async def test_a_group_photo_deleted_at_once_still_gets_its_answers_and_video(run_bot, tg_settings, telegram,
                                                                             simulator):
    """An anti-spam bot (or the sender) deletes the photo before the bot answers: the
    answers it quotes (the status message, then the video) are sent without the quote."""
    engine, _ = await run_bot(quiet(tg_settings))
    photo = telegram.user_message(GROUP, ALICE, caption="/effect hula", photo=image_bytes())
    telegram.user_deletes(GROUP, photo["message_id"])
    await telegram.wait_for(lambda: videos(telegram, GROUP))
    [status] = telegram.calls_to("sendMessage")  # sent once, and taken
    assert status["params"]["text"] == messages.CHECKING_PHOTO
    assert status["params"]["reply_parameters"]["allow_sending_without_reply"] is True
    await telegram.wait_for(lambda: texts(telegram, "editMessageText")[-1].endswith("done."))
    assert bot_message(telegram, GROUP, "done.")  # the status message, in the group
    assert (await engine.balance(who(ALICE))).total == 9


async def test_a_video_whose_photo_was_deleted_meanwhile_is_still_delivered(run_bot, tg_settings, telegram,
                                                                          simulator):
    await run_bot(quiet(tg_settings))
    photo = telegram.user_message(GROUP, ALICE, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: [t for t in texts(telegram, "editMessageText") if "queued" in t])
    telegram.user_deletes(GROUP, photo["message_id"])
    [video] = await telegram.wait_for(lambda: videos(telegram, GROUP))
    assert "reply_to_message" not in video  # it would have quoted the photo


async def test_an_error_answer_to_a_deleted_command_still_arrives(run_bot, telegram):
    """Even the bot's quickest answer (an unknown effect, in a group) quotes the command."""
    await run_bot()
    command = telegram.user_message(GROUP, ALICE, caption="/effect hulla", photo=image_bytes())
    telegram.user_deletes(GROUP, command["message_id"])
    # what the group sees: the messages Telegram accepted (refused calls are in ``calls`` too)
    [answer] = await telegram.wait_for(lambda: [m["text"] for (chat, _), m in telegram.messages.items()
                                                 if chat == GROUP and m["from"]["is_bot"]])
    assert answer.startswith("Unknown effect 'hulla'")


# --- Discord: rate limit headers, 429, the callback's 204 ----------------------------------------

async def test_the_fake_discord_answers_with_the_rate_limit_headers_the_spec_names(fake_discord):
    async with (aiohttp.ClientSession(headers={"Authorization": f"Bot {DC_TOKEN}"}) as http,
                http.get(f"{fake_discord.api_base_url}/users/@me") as answer):
        assert answer.status == 200
        headers = answer.headers
    declared = spec_check.discord_response_headers("GET", "/api/v10/users/@me", 200)
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Reset-After",
            "X-RateLimit-Bucket"} <= declared
    assert spec_check.discord_header_problems(declared, headers) == []
    assert int(headers["X-RateLimit-Remaining"]) == int(headers["X-RateLimit-Limit"]) - 1
    assert abs(float(headers["X-RateLimit-Reset"]) - time.time() - float(headers["X-RateLimit-Reset-After"])) < 1


async def test_the_fake_discord_answers_429_to_a_client_that_ignores_the_headers(fake_discord):
    fake_discord.rate_limits = RateLimits(2, 5.0)
    url = f"{fake_discord.api_base_url}/users/@me"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bot {DC_TOKEN}"}) as http:
        statuses = []
        for _ in range(3):
            async with http.get(url) as answer:
                statuses.append(answer.status)
                body, headers = await answer.json(), answer.headers
    assert statuses == [200, 200, 429]
    assert body["message"] == "You are being rate limited." and 0 < body["retry_after"] <= 5
    assert body["global"] is False and headers["X-RateLimit-Remaining"] == "0"
    assert headers["X-RateLimit-Scope"] == "user" and headers["Via"]  # discord.py trusts a 429 only with Via
    assert fake_discord.rate_limits.refused == ["GET /api/v10/users/@me"]


async def test_an_interaction_callback_is_204_unless_asked_with_response(fake_discord):
    deferred = {"type": 5}
    async with aiohttp.ClientSession() as http:
        answers = []
        for iid, query in ((1, ""), (2, "?with_response=true")):
            url = f"{fake_discord.api_base_url}/interactions/{iid}/itoken-{iid}/callback{query}"
            async with http.post(url, json=deferred) as answer:
                answers.append((answer.status, await answer.read()))
                declared = spec_check.discord_response_headers("POST", answer.url.path, answer.status)
                assert declared and spec_check.discord_header_problems(declared, answer.headers) == []
    (bare, empty), (full, body) = answers
    assert (bare, empty) == (204, b"")
    assert full == 200 and b'"interaction"' in body and b'"response_message_id"' in body


async def test_the_bot_keeps_to_tight_discord_rate_limits_and_delivers(run_discord, fake_discord, simulator):
    """Two requests a second per route: discord.py waits as the headers say, no request of
    the bot's is refused, and the video still comes."""
    fake_discord.rate_limits = RateLimits(2, 0.5)
    _, adapter = await run_discord()
    target = fake_discord.user_message(DC_BOB, attachments=[fake_discord.attachment(image_bytes(800, 600))])
    menu = _context_menu(fake_discord, target, user=DC_ALICE)
    feed(adapter, menu)
    _, pick = await _pick(fake_discord, adapter, menu, "hula", user=DC_ALICE)
    await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{pick['token']}", "POST") if c["files"]],
                timeout=30)
    assert fake_discord.rate_limits.emptied > 0  # the limits did bite
    assert fake_discord.rate_limits.refused == []


# --- WaveSpeed: the upload answers, the SDK 2.x flow ---------------------------------------------

async def test_the_binary_upload_answer_has_type_filename_and_size(simulator):
    photo = image_bytes(400, 400)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        form = aiohttp.FormData()
        form.add_field("file", photo, filename="cat.jpg", content_type="image/jpeg")
        async with http.post(f"{simulator.base_url}/api/v3/media/upload/binary", data=form) as answer:
            data = (await answer.json())["data"]
        form = aiohttp.FormData()
        form.add_field("file", b"MZ\x90\x00", filename="setup.exe", content_type="application/x-msdownload")
        async with http.post(f"{simulator.base_url}/api/v3/media/upload/binary", data=form) as refused:
            refusal = await refused.json()
        async with http.get(data["download_url"]) as served:
            served_bytes = await served.read()
    assert {k: data[k] for k in ("type", "filename", "size")} == {"type": "image", "filename": "cat.jpg",
                                                                  "size": len(photo)}
    assert served_bytes == photo
    assert refused.status == 400 and refusal["code"] == 1401


async def test_the_official_sdk_uploads_to_the_simulator_the_2x_way(simulator):
    """wavespeed 2.x: POST /api/v3/media/uploads announces the file, the bytes are PUT to
    the URL it answers (without the API key), then the download URL serves them."""
    clip = b"ID3" + bytes(5000)
    client = wavespeed.Client(api_key=API_KEY, base_url=simulator.base_url)
    file = io.BytesIO(clip)
    file.name = "voice.mp3"
    url = await asyncio.to_thread(client.upload, file)
    [announce] = [r for r in simulator.requests if r["path"] == "/api/v3/media/uploads"]
    [put] = [r for r in simulator.requests if r["method"] == "PUT"]
    assert announce["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert "Authorization" not in put["headers"]
    async with aiohttp.ClientSession() as http, http.get(url) as served:
        assert await served.read() == clip
    assert [mime for data, mime in simulator.uploads.values() if data == clip] == ["audio/mpeg"]


async def test_the_uploads_ticket_answer_and_its_storage_rules(simulator):
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        async with http.post(f"{simulator.base_url}/api/v3/media/uploads",
                             json={"filename": "a.png", "size": 4, "content_type": "image/png"}) as answer:
            ticket = (await answer.json())["data"]
        async with http.get(ticket["download_url"]) as early:
            assert early.status == 404  # nothing to serve before the bytes are PUT
        put = ticket["upload"]
        async with aiohttp.ClientSession() as storage:
            async with storage.put(put["url"], data=b"12345", headers=put["headers"]) as wrong_size:
                assert wrong_size.status == 400
            async with storage.put(put["url"], data=b"1234", headers=put["headers"]) as stored:
                assert stored.status == 200
            async with storage.put(put["url"], data=b"1234", headers=put["headers"]) as again:
                assert again.status == 412  # written once
        async with http.get(ticket["download_url"]) as served:
            assert await served.read() == b"1234"
        async with http.post(f"{simulator.base_url}/api/v3/media/uploads",
                             json={"filename": "notes.txt", "size": 4}) as refused:
            assert (await refused.json())["code"] == 1401
    assert {k: ticket[k] for k in ("type", "filename", "size")} == {"type": "image", "filename": "a.png", "size": 4}
    assert put["method"] == "PUT"
