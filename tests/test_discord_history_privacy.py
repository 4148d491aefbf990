"""/history on Discord follows Telegram's rule (``Press.may_post_again``): in a server
channel only a video made in that channel is listed, offered or posted again (a direct
message's prompt stays private); in a direct message, any of the user's own.

The real discord.py client against the fake Discord server; each test failed before its fix."""

# The fixtures come from tests/test_discord.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

from tests.helpers import image_bytes, job_in_state
from tests.test_discord import ALICE, callbacks, dc_settings, fake_discord, feed, run_discord, until  # noqa: F401
from tests.test_discord_experience import DM_CHANNEL, posts, video_message
from tests.test_discord_trust import OTHER, SECRET, alices_secret_video

HISTORY_JOB_1 = [{"name": "job", "type": 4, "value": 1}]


async def alices_secret_video_in_her_dm(fake, adapter, engine):
    """Alice animates a photo with a private prompt in her direct messages: job 1."""
    photo = fake.attachment(image_bytes(800, 600))
    feed(adapter, fake.slash("animate", [{"name": "image", "type": 11, "value": photo["id"]},
                                         {"name": "prompt", "type": 3, "value": SECRET}],
                             user=ALICE, attachments=[photo], dm=DM_CHANNEL))
    await video_message(fake, "kling-1.mp4")
    await until(lambda: job_in_state(engine, 1, "done"))


async def first_answer(fake, payload):
    [answer, *_] = await until(lambda: callbacks(fake, payload["token"]))
    return answer


async def test_a_video_made_in_a_dm_is_not_listed_offered_or_posted_in_a_server_channel(
        run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    await alices_secret_video_in_her_dm(fake_discord, adapter, engine)

    listing = fake_discord.slash("history", [], user=ALICE)  # in the server's channel
    feed(adapter, listing)
    assert SECRET not in str(await first_answer(fake_discord, listing))

    ask = fake_discord.interaction(4, {"id": "1", "name": "history", "type": 1, "options": [
        {"name": "job", "type": 4, "value": "", "focused": True}]}, user=ALICE)
    feed(adapter, ask)
    choices = await first_answer(fake_discord, ask)
    assert choices["type"] == 8 and choices["data"]["choices"] == []

    again = fake_discord.slash("history", HISTORY_JOB_1, user=ALICE)
    feed(adapter, again)
    answer = await first_answer(fake_discord, again)
    assert answer["data"]["content"] == "You have no job 1." and answer["data"]["flags"] & 64
    assert SECRET not in str(posts(fake_discord, again["token"]))
    assert not [p for p in posts(fake_discord, again["token"]) if p["files"]]

    in_dm = fake_discord.slash("history", HISTORY_JOB_1, user=ALICE, dm=DM_CHANNEL)  # where it was made: yes
    feed(adapter, in_dm)
    await until(lambda: [p for p in posts(fake_discord, in_dm["token"]) if p["files"]])


async def test_a_video_made_in_one_server_channel_is_not_posted_again_in_another(
        run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    await alices_secret_video(fake_discord, adapter, engine)  # in CHANNEL
    again = fake_discord.slash("history", HISTORY_JOB_1, user=ALICE, channel=OTHER)
    feed(adapter, again)
    answer = await first_answer(fake_discord, again)
    assert answer["data"]["content"] == "You have no job 1."
    assert not [p for p in posts(fake_discord, again["token"]) if p["files"]]
