"""The real python-telegram-bot Application against a fake Bot API server and the simulator."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from adapters.telegram import TelegramAdapter
from adapters.telegram.delivery import http_bot
from bot import catalog, messages
from bot.config import QuotaSettings
from tests.fake_telegram import FakeTelegram
from tests.helpers import audio_bytes, image_bytes, job_in_state, mp4_info

TOKEN = "123456:TEST-telegram-token-SECRET"
ALICE, BOB = 1001, 1002
GROUP = -100500


@pytest.fixture
async def telegram():
    fake = FakeTelegram(TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def tg_settings(settings, telegram):
    return replace(settings, telegram=replace(
        settings.telegram, token=TOKEN, base_url=telegram.base_url,
        base_file_url=telegram.base_file_url, progress_interval=0.0, admins=[ALICE]))


@pytest.fixture
def run_bot(tg_settings, adapter_runner):
    """Start engine + Telegram adapter (optionally with other settings); stopped after."""
    return lambda custom=None: adapter_runner(custom or tg_settings, TelegramAdapter)


def _texts(telegram, method="editMessageText"):
    return [c["params"]["text"] for c in telegram.calls_to(method)]


def _sent_to_wavespeed(simulator) -> str:
    return json.dumps([r["path"] for r in simulator.requests] + [r["headers"] for r in simulator.requests]
                      + simulator.submissions) + repr([u for u in simulator.uploads.values()])


async def test_photo_with_effect_caption_gets_a_video_reply(run_bot, telegram, simulator, caplog):
    caplog.set_level("DEBUG")
    engine, _ = await run_bot()
    photo = image_bytes(800, 600)
    sent = telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=photo)

    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))

    assert video["params"]["reply_parameters"]["message_id"] == sent["message_id"]
    assert video["params"]["caption"] == "effect hula · Kling Effects"
    assert mp4_info(video["files"]["video"])[0] == "h264"
    first_reply = telegram.calls_to("sendMessage")[0]["params"]
    assert first_reply["text"] == "Checking the photo…"
    edits = _texts(telegram)
    assert edits[0].startswith("Job 1 queued (effect hula), next in line. It costs 1 credit; 9 left.")
    assert any("Generating…" in t for t in edits)
    await telegram.wait_for(lambda: _texts(telegram)[-1] == "Job 1 (effect hula): done.")
    # the photo reached WaveSpeed as bytes, never as a Telegram URL holding the token
    assert photo in [data for data, _ in simulator.uploads.values()]
    assert TOKEN not in _sent_to_wavespeed(simulator) and "/file/bot" not in _sent_to_wavespeed(simulator)
    assert TOKEN not in caplog.text
    assert (await engine.balance(engine_user(ALICE))).total == 9


def engine_user(user_id):
    from bot.jobs import UserRef
    return UserRef("telegram", str(user_id))


async def test_commands_are_registered_at_start(run_bot, telegram):
    await run_bot()
    [call] = telegram.calls_to("setMyCommands")
    names = [c["command"] for c in call["params"]["commands"]]
    assert names == ["effect", "animate", "avatar", "effects", "models", "history", "quota", "jobs", "cancel", "help"]


async def test_group_reply_to_someone_elses_photo_with_botname(run_bot, telegram, simulator):
    await run_bot()
    photo = telegram.user_message(GROUP, BOB, photo=image_bytes(), push=False)
    telegram.user_message(GROUP, ALICE, text="/effect@kling_test_bot jelly press", reply_to=photo)
    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert video["params"]["chat_id"] == GROUP
    assert video["params"]["reply_parameters"]["message_id"] == photo["message_id"]
    assert simulator.submissions[0]["body"]["effect_scene"] == "jelly_press"


async def test_commands_for_another_bot_are_ignored(run_bot, telegram, simulator):
    await run_bot()
    photo = telegram.user_message(GROUP, BOB, photo=image_bytes(), push=False)
    telegram.user_message(GROUP, ALICE, text="/effect@other_bot hula", reply_to=photo)
    telegram.user_message(GROUP, ALICE, caption="/effect@other_bot hula", photo=image_bytes())
    telegram.user_message(GROUP, ALICE, text="/help@kling_test_bot")
    await telegram.wait_for(lambda: telegram.calls_to("sendMessage"))
    await asyncio.sleep(0.3)
    assert [c["params"]["text"][:10] for c in telegram.calls_to("sendMessage")] == ["I turn a p"]
    assert simulator.submissions == []


async def test_effect_menu_is_paged_and_a_tap_starts_the_job(run_bot, telegram, simulator):
    await run_bot()
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, text="/effect", reply_to=photo)
    [menu_call] = await telegram.wait_for(lambda: telegram.calls_to("sendMessage"))
    keyboard = menu_call["params"]["reply_markup"]["inline_keyboard"]
    assert menu_call["params"]["reply_parameters"]["message_id"] == photo["message_id"]
    assert sum(len(row) for row in keyboard[:-1]) == 12
    assert keyboard[-1][0]["text"] == "More ›" and keyboard[-1][0]["callback_data"] == f"fxp:{ALICE}:1"
    assert all(len(b["callback_data"].encode()) <= 64 for row in keyboard for b in row)
    menu = telegram.messages[(ALICE, max(m for c, m in telegram.messages if c == ALICE))]

    telegram.press_button(ALICE, menu, f"fxp:{ALICE}:1")  # next page
    [page] = await telegram.wait_for(lambda: telegram.calls_to("editMessageReplyMarkup"))
    assert page["params"]["reply_markup"]["inline_keyboard"][0][0]["text"] == catalog.effect_title(catalog.EFFECTS[12])

    # a menu from before effects were numbered (its buttons carry the API's spelling), as Telegram has it
    menu = {**menu, "reply_markup": {"inline_keyboard": [[{"text": "Hula", "callback_data": f"fx:{ALICE}:hula"}]]}}
    telegram.press_button(BOB, menu, f"fx:{ALICE}:hula")  # not Bob's menu
    [refused] = await telegram.wait_for(
        lambda: [c for c in telegram.calls_to("answerCallbackQuery") if c["params"].get("text")])
    assert refused["params"]["show_alert"] is True and "belongs to whoever asked" in refused["params"]["text"]

    telegram.press_button(ALICE, menu, f"fx:{ALICE}:hula")
    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert video["params"]["reply_parameters"]["message_id"] == photo["message_id"]
    assert len(simulator.submissions) == 1 and simulator.submissions[0]["body"]["effect_scene"] == "hula"


async def test_most_used_effects_come_first_in_the_menu(run_bot, telegram, simulator):
    engine, adapter = await run_bot()
    for _ in range(2):
        telegram.user_message(ALICE, ALICE, caption="/effect squish", photo=image_bytes())
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    markup = (await adapter.menus.effects("fx", ALICE)).to_dict()
    assert markup["inline_keyboard"][0][0]["text"] == "Squish"


@pytest.mark.parametrize("message, expected", [
    (dict(text="/effect hula"), "Reply /effect hula to a photo, or send a photo with that caption."),
    (dict(caption="/effect hulla", photo=image_bytes()), "Unknown effect 'hulla'. Did you mean 'hula'?"),
    (dict(caption="/effect hula", photo=image_bytes(200, 150)),
     "The photo is 200×150 px; Kling needs at least 300×300 px. Send a larger photo."),
    (dict(caption="/effect hula", document=(b"not really a png", "image/png")), "could not be read"),
    (dict(caption="/effect hula", photo=image_bytes(), file_size=25 * 1024 * 1024),
     "The photo is 25.0 MB; Telegram lets bots download files up to 20 MB."),
    (dict(caption="/animate --guidance 2 dance", photo=image_bytes()), "Guidance must be between 0 and 1"),
    (dict(caption="/animate --speed 2 dance", photo=image_bytes()), "Unknown option --speed."),
])
async def test_refusals_are_clear_and_free(run_bot, telegram, simulator, message, expected):
    engine, _ = await run_bot()
    telegram.user_message(ALICE, ALICE, **message)
    await telegram.wait_for(lambda: any(expected in t for t in _texts(telegram) + _texts(telegram, "sendMessage")))
    assert (await engine.balance(engine_user(ALICE))).total == 10
    assert simulator.submissions == []


async def test_out_of_credits_says_when_they_come_back(run_bot, tg_settings, telegram):
    await run_bot(replace(tg_settings, quota=QuotaSettings(daily_credits=1)))
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    text = await telegram.wait_for(lambda: [t for t in _texts(telegram, "sendMessage") if "out of credits" in t])
    assert "this needs 1 and you have 0. Daily credits reset to 1 at 00:00 UTC" in text[0]
    assert len(telegram.calls_to("getFile")) == 1  # refused before downloading the second photo


async def test_failed_job_edits_the_reply_and_refunds(run_bot, telegram, simulator):
    engine, _ = await run_bot()
    simulator.plan_outcome("failed")
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    text = await telegram.wait_for(lambda: [t for t in _texts(telegram) if "refunded" in t])
    assert text[0].startswith("Job 1: Kling could not make this video")
    assert text[0].endswith("Your 1 credit was refunded.")
    assert (await engine.balance(engine_user(ALICE))).total == 10
    assert telegram.calls_to("sendVideo") == []


async def test_nsfw_output_is_sent_as_spoiler(run_bot, telegram, simulator):
    await run_bot()
    simulator.plan_outcome("nsfw")
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert video["params"]["has_spoiler"] is True


async def test_nsfw_output_can_be_withheld(run_bot, tg_settings, telegram, simulator):
    await run_bot(replace(tg_settings, telegram=replace(tg_settings.telegram, nsfw="block")))
    simulator.plan_outcome("nsfw")
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: [t for t in _texts(telegram, "sendMessage") if "flagged the video as NSFW" in t])
    assert telegram.calls_to("sendVideo") == []


async def test_big_video_is_sent_as_a_link(run_bot, tg_settings, telegram, simulator):
    await run_bot(replace(tg_settings, telegram=replace(tg_settings.telegram, upload_limit_mb=0.001)))
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    [text] = await telegram.wait_for(lambda: [t for t in _texts(telegram, "sendMessage") if "Download it here" in t])
    assert f"{simulator.base_url}/outputs/" in text and "over the 0.001 MB a bot may upload" in text
    assert telegram.calls_to("sendVideo") == []


def test_a_video_too_big_to_post_without_a_link_never_shows_none():
    text = messages.too_big_to_upload("Job 1", 60 * 1048576, "the 50 MB a bot may upload", None)
    assert "None" not in text and "could not be made small enough" in text


async def test_flood_control_retry_after_is_honoured(run_bot, telegram):
    await run_bot()
    telegram.flood_next("editMessageText", retry_after=1)
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    await telegram.wait_for(lambda: _texts(telegram)[-1] == "Job 1 (effect hula): done.")
    edits = telegram.calls_to("editMessageText")
    # the refused edit was sent again after retry_after, and nothing overtook it
    assert edits[0]["params"]["text"] == edits[1]["params"]["text"]
    assert edits[1]["at"] - edits[0]["at"] >= 1.0
    await asyncio.sleep(0.3)
    assert _texts(telegram)[-1] == "Job 1 (effect hula): done."


async def test_a_workers_sending_bot_honours_flood_control_too(telegram, tg_settings):
    bot = http_bot(tg_settings.telegram)  # a worker's: it sends through the Bot API, receives nothing
    telegram.user_message(ALICE, ALICE, text="hi")  # the chat exists
    telegram.flood_next("sendMessage", retry_after=1)
    async with bot:
        await bot.send_message(ALICE, "Job 1 (effect hula): done.")
    sends = telegram.calls_to("sendMessage")
    assert len(sends) == 2 and sends[1]["at"] - sends[0]["at"] >= 1.0  # sent again after retry_after


async def test_animate_caption_with_options(run_bot, telegram, simulator):
    await run_bot()
    telegram.user_message(ALICE, ALICE, photo=image_bytes(),
                          caption="/animate --model master --duration 10 a cat dances --negative blur")
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    [submission] = simulator.submissions
    assert submission["model"] == "kwaivgi/kling-v2.0-i2v-master"
    assert {k: submission["body"][k] for k in ("prompt", "duration", "negative_prompt")} == \
        {"prompt": "a cat dances", "duration": "10", "negative_prompt": "blur"}


async def test_avatar_asks_for_the_voice_note_and_uses_it(run_bot, telegram, simulator):
    await run_bot()
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, text="/avatar smiling", reply_to=photo)
    [ask_call] = await telegram.wait_for(lambda: telegram.calls_to("sendMessage"))
    assert "reply to this message with a voice note" in ask_call["params"]["text"]
    ask = telegram.messages[(ALICE, max(m for c, m in telegram.messages if c == ALICE))]
    telegram.user_message(ALICE, BOB, voice=audio_bytes(2, "ogg", "libopus", 48000), reply_to=ask)  # not Alice
    await asyncio.sleep(0.3)
    assert simulator.submissions == []
    voice = audio_bytes(2, "ogg", "libopus", 48000)
    telegram.user_message(ALICE, ALICE, voice=voice, reply_to=ask)
    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert video["params"]["reply_parameters"]["message_id"] == photo["message_id"]
    [submission] = simulator.submissions
    assert submission["model"] == "kwaivgi/kling-v1-ai-avatar-standard"
    assert submission["body"]["prompt"] == "smiling"
    assert voice in [data for data, _ in simulator.uploads.values()]


async def test_quota_jobs_cancel_effects_and_help(run_bot, telegram):
    await run_bot()
    for text in ("/quota", "/jobs", "/cancel 5", "/cancel", "/effects", "/start"):
        telegram.user_message(ALICE, ALICE, text=text)
    replies = await telegram.wait_for(lambda: len(telegram.calls_to("sendMessage")) == 6 and
                                      _texts(telegram, "sendMessage"))
    assert replies[0].startswith("You have 10 credits. Daily credits reset at 00:00 UTC")
    assert replies[1] == "You have no jobs running."
    assert replies[2] == "You have no job 5."
    assert replies[3] == "Usage: /cancel N (/jobs lists yours)."
    assert replies[4].startswith("77 effects. Tap one, then send the photo")
    assert replies[5].startswith("Hi User1001! I turn a photo into a short Kling AI video.")


async def test_only_admins_grant_credits(run_bot, telegram):
    engine, _ = await run_bot()
    bob_said = telegram.user_message(GROUP, BOB, text="hello", push=False)
    telegram.user_message(GROUP, BOB, text="/grant 5", reply_to=bob_said)
    await telegram.wait_for(lambda: "Only the bot's admins can grant credits." in _texts(telegram, "sendMessage"))
    telegram.user_message(GROUP, ALICE, text="/grant 5", reply_to=bob_said)
    await telegram.wait_for(lambda: "User1002 now has 15 credits." in _texts(telegram, "sendMessage"))
    assert (await engine.balance(engine_user(BOB))).total == 15


async def test_restart_mid_job_still_replies_to_the_right_photo(run_bot, telegram, simulator):
    simulator.job_seconds = 1.5
    engine, adapter = await run_bot()
    photo = telegram.user_message(GROUP, BOB, photo=image_bytes(), push=False)
    telegram.user_message(GROUP, ALICE, text="/effect hula", reply_to=photo)
    await telegram.wait_for(lambda: job_in_state(engine, 1, "processing"))
    await adapter.stop()
    await engine.close()

    await run_bot()
    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert video["params"]["chat_id"] == GROUP
    assert video["params"]["reply_parameters"]["message_id"] == photo["message_id"]
    assert len(simulator.submissions) == 1


async def test_photo_sent_as_a_file_works(run_bot, telegram, simulator):
    await run_bot()
    png = image_bytes(640, 480, "PNG")
    telegram.user_message(ALICE, ALICE, caption="/effect hula", document=(png, "image/png"))
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert png in [data for data, _ in simulator.uploads.values()]


async def test_a_running_job_does_not_block_other_users(run_bot, telegram, simulator):
    simulator.job_seconds = 2.0
    await run_bot()
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: simulator.submissions)
    telegram.user_message(BOB, BOB, text="/quota")
    await telegram.wait_for(lambda: [t for t in _texts(telegram, "sendMessage") if t.startswith("You have 10")])
    assert telegram.calls_to("sendVideo") == []  # Bob was answered while Alice's job ran
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))


async def test_kling_bot_run_serves_telegram_as_a_whole_process(tmp_path, telegram):
    import os
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "config.toml").write_text(
        f'[telegram]\nbase_url = "{telegram.base_url}"\nbase_file_url = "{telegram.base_file_url}"\n'
        f'progress_interval = 0\n[storage]\npath = "bot.sqlite"\n')
    env = {**os.environ, "PYTHONPATH": str(root), "TELEGRAM_BOT_TOKEN": TOKEN}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "run", "--simulate", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        banner = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"kling-bot is running (TelegramAdapter)" in banner
        telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
        [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"), timeout=40)
        assert mp4_info(video["files"]["video"])[0] == "h264"
    finally:
        process.terminate()
        _, stderr = await process.communicate()
    assert process.returncode == 0
    assert TOKEN.encode() not in stderr


async def test_allowed_chats_limits_where_the_bot_answers(run_bot, tg_settings, telegram, simulator):
    await run_bot(replace(tg_settings, telegram=replace(tg_settings.telegram, allowed_chats=[GROUP])))
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())  # private: not allowed
    telegram.user_message(GROUP, BOB, text="/quota")
    await telegram.wait_for(lambda: telegram.calls_to("sendMessage"))
    await asyncio.sleep(0.3)
    assert [c["params"]["chat_id"] for c in telegram.calls_to("sendMessage")] == [GROUP]
    assert simulator.submissions == []


async def test_effect_menu_still_works_after_a_restart(run_bot, telegram, simulator):
    engine, adapter = await run_bot()
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, text="/effect", reply_to=photo)
    await telegram.wait_for(lambda: telegram.calls_to("sendMessage"))
    menu = telegram.messages[(ALICE, max(m for c, m in telegram.messages if c == ALICE))]
    await adapter.stop()
    await engine.close()

    await run_bot()  # a new process knows nothing of the menu but what the button says
    first = menu["reply_markup"]["inline_keyboard"][0][0]["callback_data"]  # a button the menu carries
    telegram.press_button(ALICE, menu, first)
    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert video["params"]["reply_parameters"]["message_id"] == photo["message_id"]
    assert simulator.submissions[0]["body"]["effect_scene"] == catalog.EFFECTS[int(first.split(":")[-1])]


async def test_finished_jobs_leave_no_throttle_state_behind(run_bot, telegram):
    _, adapter = await run_bot()
    for _ in range(2):
        telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    await telegram.wait_for(lambda: not adapter.courier._latest)  # a long-running bot must not grow
    assert adapter.courier._last_edit == {} and adapter.courier._locks == {}
