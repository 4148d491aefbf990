"""Review findings on #14's refused deliveries and history: a DM that refused the video is
not tried again; a private message that only said "withheld" is not claimed as the video
sent; a video kept for a refused delivery is swept after keep_days; a Telegram /history
re-post into a group that refuses videos says where to get it instead.

The real python-telegram-bot and discord.py clients against the fake servers."""

# The fixtures come from tests/test_telegram.py and tests/test_discord.py.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path

import tests.test_discord as dc
from bot import messages
from bot.jobs import UserRef
from tests.fake_discord import APP_ID, CHANNEL
from tests.helpers import finished_job, image_bytes, mp4_info
from tests.test_refused_delivery import _late, ended, ledger, tg_user, videos_to
from tests.test_telegram import ALICE, GROUP, run_bot, telegram, tg_settings  # noqa: F401
from tests.test_telegram_experience import bot_message, button, texts

fake_discord, dc_settings, run_discord = dc.fake_discord, dc.dc_settings, dc.run_discord
DISCORD_ALICE = dc.ALICE
DM_CHANNEL = 700000000000000099


def _posts_with_files(fake, channel: int) -> list[dict]:
    return [c for c in fake.to(f"/channels/{channel}/messages", "POST") if c["files"]]


async def test_discord_job_made_in_a_dm_that_refuses_the_video_is_not_sent_there_twice(
        run_discord, dc_settings, fake_discord, simulator):
    engine, adapter = await run_discord()
    fake_discord.dm_channels[DM_CHANNEL] = DISCORD_ALICE  # her DM with the bot, which she closes
    fake_discord.closed_dms.add(DISCORD_ALICE)
    _late(adapter)  # the token is gone: the video goes to the DM channel itself
    dc.feed(adapter, dc.effect_payload(fake_discord, dm=DM_CHANNEL))
    job = await dc.until(lambda: finished_job(engine, 1))

    assert job.state.value == "done"
    assert ledger(dc_settings.storage.path, 1) == ["reserve", "commit"]
    assert len(_posts_with_files(fake_discord, DM_CHANNEL)) == 1  # refused once; that DM is not "another chance"


async def test_discord_refused_nsfw_video_withheld_in_the_dm_is_not_claimed_as_sent(
        run_discord, dc_settings, fake_discord, simulator):
    """nsfw = "block": the DM gets only the withheld notice, so what the bot says in the
    channel must not be "I sent it to you in a private message"."""
    custom = replace(dc_settings, discord=replace(dc_settings.discord, nsfw="block"))
    engine, adapter = await run_discord(custom)
    simulator.plan_outcome("nsfw")
    fake_discord.refuse_channels[CHANNEL] = (50013, "Missing Permissions")
    _late(adapter)
    dc.feed(adapter, dc.effect_payload(fake_discord))
    job = await dc.until(lambda: finished_job(engine, 1))
    assert job.state.value == "done"

    [dm] = await dc.until(lambda: [c for c in fake_discord.to("/channels/", "POST")
                                   if int(c["path"].split("/")[4]) in fake_discord.dm_channels])
    assert not dm["files"] and "NSFW" in dm["json"]["content"]  # withheld: no video went privately
    in_channel = f"/channels/{CHANNEL}/messages"
    said = await dc.until(lambda: [c["json"]["content"] for c in fake_discord.to(in_channel, "POST")
                                   if "/history" in c["json"]["content"]])
    assert "sent it to you" not in said[-1] and "/history posts it for the next" in said[-1]
    assert not [c for c in fake_discord.calls if "sent it to you" in str(c.get("json"))]
    assert (await engine.balance(UserRef("discord", str(DISCORD_ALICE)))).total == 9  # charged: WaveSpeed made it


# --- Results.sweep_kept: a refused video is kept for keep_days, then housekeeping deletes it

async def _one_housekeeping_pass(engine) -> None:
    """Housekeeping as the engine runs it (its first pass happens at once), then stopped."""
    housekeeping = asyncio.ensure_future(engine.results.keep_house())
    await asyncio.sleep(0.2)
    housekeeping.cancel()
    await asyncio.gather(housekeeping, return_exceptions=True)


def _history_post(fake_discord, adapter, job_id: int = 1) -> dict:
    payload = fake_discord.slash("history", [{"name": "job", "type": 4, "value": job_id}], user=DISCORD_ALICE)
    dc.feed(adapter, payload)
    return payload


async def test_a_kept_refused_video_is_swept_after_keep_days_then_history_falls_back_to_wavespeed(
        run_discord, dc_settings, fake_discord, simulator):
    custom = replace(dc_settings, storage=replace(dc_settings.storage, keep_days=1))
    engine, adapter = await run_discord(custom)
    fake_discord.refuse_channels[CHANNEL] = (50013, "Missing Permissions")
    fake_discord.closed_dms.add(DISCORD_ALICE)  # nowhere to send it: only /history can
    in_time = _late(adapter)
    dc.feed(adapter, dc.effect_payload(fake_discord))
    job = await dc.until(lambda: finished_job(engine, 1))
    assert job.state.value == "done"
    kept = Path(custom.storage.videos_dir) / "kept-1.mp4"
    assert kept.is_file()

    await _one_housekeeping_pass(engine)
    assert kept.is_file()  # within keep_days: kept

    two_days_ago = time.time() - 2 * 86400
    os.utime(kept, (two_days_ago, two_days_ago))
    await engine.store.update_job(1, finished_at=two_days_ago)
    await _one_housekeeping_pass(engine)
    assert not kept.exists()  # past keep_days: deleted
    assert list(Path(custom.storage.videos_dir).glob("kept-*")) == []

    # within WaveSpeed's 7 days, /history fetches it from WaveSpeed instead
    del fake_discord.refuse_channels[CHANNEL]
    in_time()
    downloads = len([r for r in simulator.requests if r["path"].startswith("/outputs/")])
    again = _history_post(fake_discord, adapter)
    upload = await dc.until(lambda: [p for p in fake_discord.to(f"/webhooks/{APP_ID}/{again['token']}", "POST")
                                     if p["files"]])
    assert mp4_info(upload[0]["files"]["kling-1.mp4"])[0] == "h264"
    assert len([r for r in simulator.requests if r["path"].startswith("/outputs/")]) == downloads + 1
    assert (await engine.balance(UserRef("discord", str(DISCORD_ALICE)))).total == 9  # a re-post is free


async def test_a_swept_refused_video_past_wavespeeds_7_days_is_gone_in_history(
        run_discord, dc_settings, fake_discord, simulator):
    custom = replace(dc_settings, storage=replace(dc_settings.storage, keep_days=1))
    engine, adapter = await run_discord(custom)
    fake_discord.refuse_channels[CHANNEL] = (50013, "Missing Permissions")
    fake_discord.closed_dms.add(DISCORD_ALICE)
    in_time = _late(adapter)
    dc.feed(adapter, dc.effect_payload(fake_discord))
    await dc.until(lambda: finished_job(engine, 1))
    kept = Path(custom.storage.videos_dir) / "kept-1.mp4"
    ten_days_ago = time.time() - 10 * 86400
    os.utime(kept, (ten_days_ago, ten_days_ago))
    await engine.store.update_job(1, finished_at=ten_days_ago)
    await _one_housekeeping_pass(engine)
    assert not kept.exists()

    del fake_discord.refuse_channels[CHANNEL]
    in_time()
    downloads = len([r for r in simulator.requests if r["path"].startswith("/outputs/")])
    again = _history_post(fake_discord, adapter)
    followups = f"/webhooks/{APP_ID}/{again['token']}"
    await dc.until(lambda: [p for p in fake_discord.to(followups, "POST")
                            if p["json"] and messages.VIDEO_GONE in p["json"]["content"]])
    assert not [p for p in fake_discord.to(followups, "POST") if p["files"]]
    assert len([r for r in simulator.requests if r["path"].startswith("/outputs/")]) == downloads  # not asked


# --- Telegram /history re-post into a group that refuses videos ------------------------------

async def test_telegram_history_repost_into_a_group_that_refuses_videos_says_where_to_get_it(
        run_bot, tg_settings, telegram, simulator):
    engine, _ = await run_bot()
    telegram.user_message(GROUP, ALICE, caption="/effect@kling_test_bot hula", photo=image_bytes())
    job = await ended(telegram, engine)
    assert job.state.value == "done" and len(videos_to(telegram, GROUP)) == 1  # her job, made in this group

    telegram.no_video_rights.add(GROUP)  # the group then takes the bot's right to post videos
    telegram.user_message(GROUP, ALICE, text="/history@kling_test_bot")
    await telegram.wait_for(lambda: [m for (c, _), m in telegram.messages.items()
                                     if c == GROUP and "Your recent jobs" in m.get("text", "")])
    listing = bot_message(telegram, GROUP, "Your recent jobs")
    telegram.press_button(ALICE, listing, button(listing, "hist:1"))
    await telegram.wait_for(lambda: messages.REPOST_REFUSED in texts(telegram))

    [refusal] = [c for c in telegram.calls_to("sendMessage") if c["params"]["text"] == messages.REPOST_REFUSED]
    assert int(refusal["params"]["chat_id"]) == GROUP
    assert len(videos_to(telegram, GROUP)) == 2  # tried once, refused; not retried
    assert (await engine.balance(tg_user(ALICE))).total == 9  # only the first video was charged
