"""Issue #14, item 2 on Discord: custom ids are the client's word. A button, select or form
that names someone's job, or a message in another channel, reaches nothing it may not:
refused like an expired button, at no cost, revealing nothing, nothing sent to WaveSpeed.

The real discord.py client against the fake Discord server (which, as Discord, reads a
message only through its own channel); each test failed before its fix.
"""

# The fixtures come from tests/test_discord.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

from dataclasses import replace

import pytest

from bot import messages
from tests.fake_discord import CHANNEL
from tests.helpers import image_bytes, job_in_state
from tests.test_discord import ALICE, BOB, callbacks, dc_settings, fake_discord, feed, run_discord, until  # noqa: F401
from tests.test_discord_experience import DM_CHANNEL, components, edits, posts, press, video_message, who

OTHER = 700000000000000002  # another channel of the server, where Bob is too
PRIVATE = 700000000000000003  # a channel the bot is in and Bob cannot see
CAROL = 600000000000000003
SECRET = "a secret garden party"


async def alices_secret_video(fake, adapter, engine):
    """Alice animates her photo with a private prompt in CHANNEL; job 1, its video message."""
    photo = fake.attachment(image_bytes(800, 600))
    payload = fake.slash("animate", [{"name": "image", "type": 11, "value": photo["id"]},
                                     {"name": "prompt", "type": 3, "value": SECRET}],
                         user=ALICE, attachments=[photo])
    feed(adapter, payload)
    message = await video_message(fake, "kling-1.mp4")
    async def done_and_said():
        return await job_in_state(engine, 1, "done") and [e for e in edits(fake, payload["token"])
                                                          if e.endswith("done.")]

    await until(done_and_said)
    return message


async def own_video(fake, adapter, user, channel, filename):
    """``user`` makes a video with /effect hula in ``channel``; the message carrying it."""
    photo = fake.attachment(image_bytes(640, 480))
    feed(adapter, fake.slash("effect", [{"name": "scene", "type": 3, "value": "hula"},
                                        {"name": "image", "type": 11, "value": photo["id"]}],
                             user=user, attachments=[photo], channel=channel))
    return await video_message(fake, filename)


def submit_form(fake, adapter, custom_id, text, *, user, channel, message=None):
    """A form's submit as a client may send it: any custom id, in the channel it is in."""
    payload = fake.interaction(5, {"custom_id": custom_id, "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": "text", "value": text}]}]},
        user=user, channel=channel, message=message)
    feed(adapter, payload)
    return payload


async def private_answer(fake, token):
    """The interaction's answer, which must be a private message, not a form, a public
    "thinking…" or an edited menu."""
    try:
        first, *_ = await until(lambda: callbacks(fake, token), 10)
    except TimeoutError:
        pytest.fail("never answered: Discord shows 'This interaction failed'")
    assert first["type"] == 4 and first["data"]["flags"] & 64, f"answered with type {first['type']}: it went ahead"
    return first["data"]


def context_menu(fake, message, *, user, channel):
    return fake.interaction(2, {"id": "2", "name": "Animate with Kling", "type": 3, "target_id": message["id"],
                                "resolved": {"messages": {message["id"]: message}}}, user=user, channel=channel)


def said_since(fake, first_call):
    """Everything the bot sent to Discord from call ``first_call`` on."""
    return str([(c["path"], c["json"]) for c in fake.calls[first_call:]])


# --- result forms and buttons ------------------------------------------------------------

@pytest.mark.parametrize("form, text", [("kling:promptform:1", "she waves"), ("kling:fxform:1", "hula")])
async def test_a_forged_form_for_someone_elses_job_from_another_channel_is_refused_like_an_expired_button(
        run_discord, fake_discord, simulator, form, text):
    engine, adapter = await run_discord()
    await alices_secret_video(fake_discord, adapter, engine)
    first_call = len(fake_discord.calls)
    submit = submit_form(fake_discord, adapter, form, text, user=BOB, channel=OTHER)
    answer = await private_answer(fake_discord, submit["token"])
    assert answer["content"] == messages.SOURCE_GONE  # as an expired button: nothing about job 1
    assert [c["type"] for c in callbacks(fake_discord, submit["token"])] == [4]  # no public "thinking…"
    assert SECRET not in said_since(fake_discord, first_call)
    assert len(simulator.submissions) == 1 and await engine.store.job(2) is None
    assert (await engine.balance(who(BOB))).total == 10


FORGED_PRESSES = [("kling:again:1", None), ("kling:fx:1", None), ("kling:prompt:1", None),
                  ("kling:fxpick:1", ["santa_hug"]), ("kling:fxname:1", None)]


@pytest.mark.parametrize("channel", [CHANNEL, OTHER], ids=["same channel", "another channel"])
@pytest.mark.parametrize("custom_id, values", FORGED_PRESSES)
async def test_a_forged_press_on_a_message_without_that_button_is_refused_like_an_expired_button(
        run_discord, fake_discord, simulator, custom_id, values, channel):
    """Bob edits the custom id of a button on his own video (job 2) to name Alice's job 1."""
    engine, adapter = await run_discord()
    await alices_secret_video(fake_discord, adapter, engine)
    bobs = await own_video(fake_discord, adapter, BOB, channel, "kling-2.mp4")
    await until(lambda: job_in_state(engine, 2, "done"))
    first_call = len(fake_discord.calls)
    forged = press(fake_discord, adapter, bobs, custom_id, user=BOB, values=values)
    answer = await private_answer(fake_discord, forged["token"])
    assert answer["content"] == messages.SOURCE_GONE and "components" not in answer  # no menu
    assert [c["type"] for c in callbacks(fake_discord, forged["token"])] == [4]  # no form, no "thinking…"
    assert SECRET not in said_since(fake_discord, first_call)
    assert len(simulator.submissions) == 2 and await engine.store.job(3) is None
    assert (await engine.balance(who(BOB))).total == 9  # his own video only


async def test_buttons_reposted_in_the_owners_direct_messages_serve_her(run_discord, fake_discord, simulator):
    """Alice posts her video again in her direct messages (/history; into another server
    channel it is refused, see test_discord_history_privacy): the buttons there are hers
    and work, although that channel is not the job's."""
    engine, adapter = await run_discord()
    await alices_secret_video(fake_discord, adapter, engine)
    again = fake_discord.slash("history", [{"name": "job", "type": 4, "value": 1}], user=ALICE, dm=DM_CHANNEL)
    feed(adapter, again)
    await until(lambda: [p for p in posts(fake_discord, again["token"]) if p["files"]])
    repost = next(m for m in fake_discord.messages.values()
                  if m["channel_id"] == str(DM_CHANNEL) and "kling:again:1" in components(m))
    hers = press(fake_discord, adapter, repost, "kling:again:1", user=ALICE, dm=DM_CHANNEL)  # the owner may, anywhere
    await video_message(fake_discord, "kling-2.mp4")
    assert callbacks(fake_discord, hers["token"])[0]["type"] == 5
    assert simulator.submissions[1]["body"]["prompt"] == SECRET


async def test_the_real_buttons_still_work_for_a_stranger_in_their_channel_and_for_the_owner(
        run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    video = await alices_secret_video(fake_discord, adapter, engine)
    opened = press(fake_discord, adapter, video, "kling:prompt:1", user=BOB)  # under the video, in its channel
    [form] = await until(lambda: callbacks(fake_discord, opened["token"]))
    assert form["type"] == 9
    submit_form(fake_discord, adapter, form["data"]["custom_id"], "she waves", user=BOB, channel=CHANNEL,
                message=video)
    await video_message(fake_discord, "kling-2.mp4")
    assert simulator.submissions[1]["body"]["prompt"] == "she waves" and (await engine.balance(who(BOB))).total == 9
    submit_form(fake_discord, adapter, "kling:fxform:1", "hula", user=ALICE, channel=OTHER)  # her own job
    await video_message(fake_discord, "kling-3.mp4")
    assert simulator.submissions[2]["body"]["effect_scene"] == "hula"


# --- [discord] allowed_channels: the photo's channel too -------------------------------------

async def test_allowed_channels_apply_to_the_channel_a_jobs_photo_comes_from(run_discord, fake_discord, simulator):
    """Job 1 was made in CHANNEL; only her direct messages are allowed now. Alice's own
    buttons there (a /history repost) may not make videos of CHANNEL's photo, nor her form
    for job 1 submitted in OTHER with only OTHER allowed; and the other way round, only
    CHANNEL allowed, her form for job 1 submitted in OTHER is refused."""
    engine, adapter = await run_discord()
    await alices_secret_video(fake_discord, adapter, engine)
    alice_has = (await engine.balance(who(ALICE))).total
    again = fake_discord.slash("history", [{"name": "job", "type": 4, "value": 1}], user=ALICE, dm=DM_CHANNEL)
    feed(adapter, again)
    await until(lambda: [p for p in posts(fake_discord, again["token"]) if p["files"]])
    repost = next(m for m in fake_discord.messages.values()
                  if m["channel_id"] == str(DM_CHANNEL) and "kling:again:1" in components(m))
    adapter.settings = replace(adapter.settings, allowed_channels=[DM_CHANNEL])
    tokens = [press(fake_discord, adapter, repost, custom_id, user=ALICE, dm=DM_CHANNEL)["token"]
              for custom_id in ("kling:again:1", "kling:fx:1", "kling:prompt:1")]
    for token in tokens:
        assert (await private_answer(fake_discord, token))["content"] == messages.SOURCE_CHANNEL_NOT_ALLOWED
    adapter.settings = replace(adapter.settings, allowed_channels=[OTHER])
    submit = submit_form(fake_discord, adapter, "kling:promptform:1", "she waves", user=ALICE, channel=OTHER)
    assert (await private_answer(fake_discord, submit["token"]))["content"] == messages.SOURCE_CHANNEL_NOT_ALLOWED

    adapter.settings = replace(adapter.settings, allowed_channels=[CHANNEL])  # and the other way round
    submit = submit_form(fake_discord, adapter, "kling:fxform:1", "hula", user=ALICE, channel=OTHER)
    assert (await private_answer(fake_discord, submit["token"]))["content"] == messages.CHANNEL_NOT_ALLOWED
    assert len(simulator.submissions) == 1 and (await engine.balance(who(ALICE))).total == alice_has


# --- the context menu's picker, and the photo menu ----------------------------------------------

def carols_photo(fake):
    """Carol's photo in PRIVATE, which the bot can read and Bob cannot see."""
    return fake.user_message(CAROL, attachments=[fake.attachment(image_bytes(800, 600))], channel_id=str(PRIVATE))


def nothing_read_from(fake, channel):
    return fake.to(f"/channels/{channel}/") == [] and fake.to("/attachments/") == []


@pytest.mark.parametrize("remembered", [True, False], ids=["menu just opened by Carol", "read again"])
async def test_a_forged_picker_form_naming_a_message_in_another_channel_animates_nothing(
        run_discord, fake_discord, simulator, remembered):
    engine, adapter = await run_discord()
    photo = carols_photo(fake_discord)
    if remembered:  # the picker remembers the image of a menu it opened (by channel and message)
        opened = context_menu(fake_discord, photo, user=CAROL, channel=PRIVATE)
        feed(adapter, opened)
        await until(lambda: callbacks(fake_discord, opened["token"]))
    submit = submit_form(fake_discord, adapter, f"kling:ctxform:{PRIVATE}:{photo['id']}", "hula",
                         user=BOB, channel=CHANNEL)
    answer = await private_answer(fake_discord, submit["token"])
    assert answer["content"] == messages.DISCORD_PHOTO_GONE
    assert nothing_read_from(fake_discord, PRIVATE) and simulator.submissions == [] and simulator.uploads == {}
    assert (await engine.balance(who(BOB))).total == 10


async def test_a_picker_form_naming_a_message_of_another_channel_under_this_one_reads_nothing(
        run_discord, fake_discord, simulator):
    """The message is read through the channel the form is submitted in: one of another
    channel is not found there (as Discord answers), and nothing is downloaded."""
    engine, adapter = await run_discord()
    photo = carols_photo(fake_discord)
    submit = submit_form(fake_discord, adapter, f"kling:ctxform:{CHANNEL}:{photo['id']}", "hula",
                         user=BOB, channel=CHANNEL)
    [answer] = await until(lambda: [p["json"] for p in posts(fake_discord, submit["token"])])
    assert answer["content"] == messages.DISCORD_PHOTO_GONE and answer["flags"] & 64
    assert [c["type"] for c in callbacks(fake_discord, submit["token"])] == [6]  # deferred while reading: quiet
    assert fake_discord.to(f"/channels/{CHANNEL}/messages/{photo['id']}", "GET")  # read through this channel
    assert fake_discord.to("/attachments/") == [] and simulator.submissions == []
    assert (await engine.balance(who(BOB))).total == 10


@pytest.mark.parametrize("kind", ["kling:ctx", "kling:ctxname"])
async def test_a_forged_picker_select_or_button_naming_another_channel_is_refused(
        run_discord, fake_discord, simulator, kind):
    """Bob opens the picker on a photo of his channel, then edits its custom ids to name
    Carol's message in PRIVATE."""
    engine, adapter = await run_discord()
    photo = carols_photo(fake_discord)
    mine = fake_discord.user_message(BOB, attachments=[fake_discord.attachment(image_bytes())])
    opened = context_menu(fake_discord, mine, user=BOB, channel=CHANNEL)
    feed(adapter, opened)
    await until(lambda: callbacks(fake_discord, opened["token"]))
    picker = fake_discord.messages[fake_discord.originals[opened["token"]]]
    forged = press(fake_discord, adapter, picker, f"{kind}:{PRIVATE}:{photo['id']}", user=BOB,
                   values=["hula"] if kind == "kling:ctx" else None)
    answer = await private_answer(fake_discord, forged["token"])
    assert answer["content"] == messages.DISCORD_PHOTO_GONE
    assert [c["type"] for c in callbacks(fake_discord, forged["token"])] == [4]  # no form, the menu as it was
    assert nothing_read_from(fake_discord, PRIVATE) and simulator.submissions == []


async def test_a_forged_photo_menu_form_naming_a_photo_in_a_channel_not_allowed_animates_nothing(
        run_discord, dc_settings, fake_discord, simulator):
    """Bob's own photo in a channel outside allowed_channels, named by a photo-menu form he
    submits in an allowed one."""
    engine, adapter = await run_discord(replace(dc_settings, discord=replace(dc_settings.discord,
                                                                             allowed_channels=[CHANNEL])))
    photo = fake_discord.user_message(BOB, attachments=[fake_discord.attachment(image_bytes())],
                                      channel_id=str(PRIVATE))
    submit = submit_form(fake_discord, adapter, f"kling:pickform:{PRIVATE}:{photo['id']}", "hula",
                         user=BOB, channel=CHANNEL)
    answer = await private_answer(fake_discord, submit["token"])
    assert answer["content"] == messages.DISCORD_PHOTO_GONE
    assert nothing_read_from(fake_discord, PRIVATE) and simulator.submissions == []
    assert (await engine.balance(who(BOB))).total == 10
