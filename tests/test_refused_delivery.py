"""#14 item 4: a chat that refuses the finished video (the user blocked the bot, the bot may
not post videos in the group, Discord's Missing Permissions / Missing Access) must not turn a
video WaveSpeed made and billed into a refund. The job is charged, the video stays
retrievable through /history (and is offered privately where the platform allows), and the
user is told where. A genuine failure is still refunded.

The real python-telegram-bot and discord.py clients against the fake servers, which refuse
the way the real APIs do (texts and codes as Telegram and Discord send them)."""

# The fixtures come from tests/test_telegram.py and tests/test_discord.py.
# ruff: noqa: F811

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

import tests.test_discord as dc
from bot.jobs import UserRef
from tests.fake_discord import APP_ID, CHANNEL
from tests.helpers import finished_job, image_bytes, job_in_state, mp4_info
from tests.test_telegram import ALICE, GROUP, TOKEN, run_bot, telegram, tg_settings  # noqa: F401
from tests.test_telegram_experience import bot_message, button, texts

fake_discord, dc_settings, run_discord = dc.fake_discord, dc.dc_settings, dc.run_discord
DISCORD_ALICE = dc.ALICE


def ledger(db: str, job_id: int) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [kind for (kind,) in conn.execute("select entry from ledger where job_id = ? order by id", [job_id])]


def credits_match_ledger(db: str, daily: int = 10) -> bool:
    with sqlite3.connect(db) as conn:
        users = conn.execute("select key, daily_left + bonus from users").fetchall()
        moved = dict(conn.execute("select user_key, sum(daily_delta + bonus_delta) from ledger"
                                  " group by user_key").fetchall())
    return all(have == daily + moved.get(key, 0) for key, have in users)


def tg_user(user_id: int) -> UserRef:
    return UserRef("telegram", str(user_id))


async def ended(telegram, engine, job_id: int = 1):
    return await telegram.wait_for(lambda: finished_job(engine, job_id))


async def until_processing(telegram, engine, job_id: int = 1) -> None:
    await telegram.wait_for(lambda: job_in_state(engine, job_id, "processing"))


def videos_to(telegram, chat: int) -> list[dict]:
    return [c for c in telegram.calls_to("sendVideo") if int(c["params"]["chat_id"]) == chat]


# --- Telegram ------------------------------------------------------------------------------

async def test_telegram_group_without_video_rights_charges_keeps_and_sends_it_privately(
        run_bot, tg_settings, telegram, simulator):
    engine, _ = await run_bot()
    telegram.no_video_rights.add(GROUP)
    telegram.user_message(GROUP, ALICE, caption="/effect@kling_test_bot hula", photo=image_bytes())
    job = await ended(telegram, engine)

    assert job.state.value == "done"  # WaveSpeed made it: charged, not refunded
    assert (await engine.balance(tg_user(ALICE))).total == 9
    assert ledger(tg_settings.storage.path, 1) == ["reserve", "commit"]
    assert credits_match_ledger(tg_settings.storage.path)
    assert len(videos_to(telegram, GROUP)) == 1  # refused once: a permanent refusal is not retried
    [private] = await telegram.wait_for(lambda: videos_to(telegram, ALICE))  # offered in her private chat
    assert mp4_info(private["files"]["video"])[0] == "h264"
    assert "/history" in private["params"]["caption"] and "7 days" in private["params"]["caption"]
    status = await telegram.wait_for(lambda: [t for t in texts(telegram, "editMessageText") if "/history" in t])
    assert "could not be posted here" in status[-1] and "private" in status[-1] and "7 days" in status[-1]
    assert "refunded" not in " ".join(texts(telegram, "editMessageText") + texts(telegram))

    # /history in her private chat posts it again, with no charge
    telegram.user_message(ALICE, ALICE, text="/history")
    await telegram.wait_for(lambda: [t for t in texts(telegram) if "Your recent jobs" in t])
    menu = bot_message(telegram, ALICE, "Your recent jobs")
    assert "Job 1 (effect hula): done" in menu["text"]
    telegram.press_button(ALICE, menu, button(menu, "hist:1"))
    await telegram.wait_for(lambda: len(videos_to(telegram, ALICE)) == 2)

    # once the group accepts videos again, /history there posts it there too
    telegram.no_video_rights.discard(GROUP)
    telegram.user_message(GROUP, ALICE, text="/history@kling_test_bot")
    await telegram.wait_for(lambda: [m for (c, _), m in telegram.messages.items()
                                     if c == GROUP and "Your recent jobs" in m.get("text", "")])
    listing = bot_message(telegram, GROUP, "Your recent jobs")
    telegram.press_button(ALICE, listing, button(listing, "hist:1"))
    [again] = await telegram.wait_for(lambda: [c for c in videos_to(telegram, GROUP)[1:]])
    assert mp4_info(again["files"]["video"])[0] == "h264"
    assert (await engine.balance(tg_user(ALICE))).total == 9


async def test_telegram_user_who_blocked_the_bot_is_charged_and_gets_the_video_from_history(
        run_bot, tg_settings, telegram, simulator):
    simulator.job_seconds = 1.0
    engine, _ = await run_bot()
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    await until_processing(telegram, engine)
    telegram.blocked.add(ALICE)  # she blocks the bot while WaveSpeed works
    job = await ended(telegram, engine)

    assert job.state.value == "done"
    assert (await engine.balance(tg_user(ALICE))).total == 9
    assert ledger(tg_settings.storage.path, 1) == ["reserve", "commit"]
    assert len(telegram.calls_to("sendVideo")) == 1  # refused once, not retried

    telegram.blocked.discard(ALICE)  # she unblocks: the video is hers for the asking
    telegram.user_message(ALICE, ALICE, text="/history")
    await telegram.wait_for(lambda: [t for t in texts(telegram) if "Your recent jobs" in t])
    menu = bot_message(telegram, ALICE, "Your recent jobs")
    telegram.press_button(ALICE, menu, button(menu, "hist:1"))
    [_, again] = await telegram.wait_for(lambda: len(videos_to(telegram, ALICE)) == 2 and videos_to(telegram, ALICE))
    assert mp4_info(again["files"]["video"])[0] == "h264"
    assert (await engine.balance(tg_user(ALICE))).total == 9


async def test_telegram_group_refusal_when_the_user_never_started_the_bot_says_use_history(
        run_bot, tg_settings, telegram, simulator):
    engine, _ = await run_bot()
    telegram.no_video_rights.add(GROUP)
    telegram.blocked.add(ALICE)  # no private chat with the bot either
    telegram.user_message(GROUP, ALICE, caption="/effect@kling_test_bot hula", photo=image_bytes())
    job = await ended(telegram, engine)
    assert job.state.value == "done" and (await engine.balance(tg_user(ALICE))).total == 9
    status = await telegram.wait_for(lambda: [t for t in texts(telegram, "editMessageText") if "/history" in t])
    assert "could not be posted here" in status[-1] and "private chat with me" in status[-1]
    assert "sent it to you" not in status[-1]


async def test_telegram_a_genuine_failure_is_still_refunded(run_bot, tg_settings, telegram, simulator):
    engine, _ = await run_bot()
    simulator.plan_outcome("failed")
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    job = await ended(telegram, engine)
    assert job.state.value == "failed"
    assert (await engine.balance(tg_user(ALICE))).total == 10
    assert ledger(tg_settings.storage.path, 1) == ["reserve", "refund"]
    await telegram.wait_for(lambda: [t for t in texts(telegram, "editMessageText") if "refunded" in t])


# --- Discord -------------------------------------------------------------------------------

def _late(adapter):
    """Past the interaction token's 15 minutes: the video goes to the channel. Returns
    what puts the clock back (for a fresh interaction's token)."""
    real_clock = adapter.courier.clock
    adapter.courier.clock = lambda: real_clock() + 16 * 60
    return lambda: setattr(adapter.courier, "clock", real_clock)


@pytest.mark.parametrize("code, message", [(50013, "Missing Permissions"), (50001, "Missing Access")])
async def test_discord_channel_refusal_charges_and_sends_a_dm(run_discord, dc_settings, fake_discord, simulator,
                                                              code, message):
    engine, adapter = await run_discord()
    fake_discord.refuse_channels[CHANNEL] = (code, message)
    in_time = _late(adapter)
    dc.feed(adapter, dc.effect_payload(fake_discord))
    job = await dc.until(lambda: finished_job(engine, 1))

    assert job.state.value == "done"
    assert (await engine.balance(UserRef("discord", str(DISCORD_ALICE)))).total == 9
    assert ledger(dc_settings.storage.path, 1) == ["reserve", "commit"]
    assert len(fake_discord.to(f"/channels/{CHANNEL}/messages", "POST")) == 1  # not retried
    [dm] = await dc.until(lambda: [c for c in fake_discord.to("/channels/", "POST")
                                   if int(c["path"].split("/")[4]) in fake_discord.dm_channels])
    assert fake_discord.dm_channels[int(dm["path"].split("/")[4])] == DISCORD_ALICE
    assert "kling-1.mp4" in dm["files"]
    assert "could not be posted" in dm["json"]["content"] and "/history" in dm["json"]["content"]

    # the channel accepts videos again: /history posts it there
    del fake_discord.refuse_channels[CHANNEL]
    in_time()
    again = fake_discord.slash("history", [{"name": "job", "type": 4, "value": 1}], user=DISCORD_ALICE)
    dc.feed(adapter, again)
    upload = await dc.until(lambda: [p for p in fake_discord.to(f"/webhooks/{APP_ID}/{again['token']}", "POST")
                                     if p["files"]])
    assert mp4_info(upload[0]["files"]["kling-1.mp4"])[0] == "h264"


async def test_discord_refusal_with_closed_dms_is_charged_and_kept_for_keep_days(
        run_discord, dc_settings, fake_discord, simulator):
    """Nobody can be told (channel and DMs refuse, the token is gone): the video is kept on
    disk for keep_days, so /history posts it even after WaveSpeed's 7 days."""
    custom = replace(dc_settings, storage=replace(dc_settings.storage, keep_days=30))
    engine, adapter = await run_discord(custom)
    fake_discord.refuse_channels[CHANNEL] = (50013, "Missing Permissions")
    fake_discord.closed_dms.add(DISCORD_ALICE)
    in_time = _late(adapter)
    dc.feed(adapter, dc.effect_payload(fake_discord))
    job = await dc.until(lambda: finished_job(engine, 1))
    assert job.state.value == "done" and (await engine.balance(UserRef("discord", str(DISCORD_ALICE)))).total == 9
    assert ledger(custom.storage.path, 1) == ["reserve", "commit"]
    assert [p.name for p in Path(custom.storage.videos_dir).iterdir()] == ["kept-1.mp4"]

    await engine.store.update_job(1, finished_at=time.time() - 10 * 86400)  # past WaveSpeed's 7 days
    del fake_discord.refuse_channels[CHANNEL]
    in_time()
    again = fake_discord.slash("history", [{"name": "job", "type": 4, "value": 1}], user=DISCORD_ALICE)
    dc.feed(adapter, again)
    upload = await dc.until(lambda: [p for p in fake_discord.to(f"/webhooks/{APP_ID}/{again['token']}", "POST")
                                     if p["files"]])
    assert mp4_info(upload[0]["files"]["kling-1.mp4"])[0] == "h264"
    # the command's last step (its status message removed) comes after its copy is gone
    await dc.until(lambda: fake_discord.to(f"/webhooks/{APP_ID}/{again['token']}/messages/", "DELETE"))
    assert [p.name for p in Path(custom.storage.videos_dir).iterdir()] == ["kept-1.mp4"]  # still kept
