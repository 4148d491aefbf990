"""Issue #16 on Discord: /animate with models that exist only in WaveSpeed's live listing.

One stable set of /animate options (model, duration, aspect, sound, ...) whose
autocomplete follows the model chosen so far; combinations a model does not take are
refused before anything is downloaded; /models lists the offer with prices. The real
discord.py client against the fake Discord server and the WaveSpeed simulator: the
assertions are on what Discord (so the user) and WaveSpeed saw.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

import tests.test_discord as base
from bot import messages
from bot.config import ModelsSettings
from bot.jobs import UserRef
from tests import spec_check
from tests.fake_discord import APP_ID, GUILD
from tests.helpers import image_bytes

ALICE, BOB = base.ALICE, base.BOB
fake_discord, dc_settings, run_discord = base.fake_discord, base.dc_settings, base.run_discord
feed, until, callbacks = base.feed, base.until, base.callbacks

V3 = "kwaivgi/kling-v3.0-pro/image-to-video"
TURBO = "kwaivgi/kling-v2.5-turbo-pro/image-to-video"
SEEDS_AND_TURBO = ["kwaivgi/kling-effects", "kwaivgi/kling-v1-ai-avatar-standard", "kwaivgi/kling-v2.1-*",
                   "kwaivgi/kling-v2.0-i2v-master", V3, TURBO]


def who(user_id):
    return UserRef("discord", str(user_id))


def animate(fake, *options, user=ALICE, end_image=False):
    """/animate with a photo, a prompt and ``options`` ((name, type, value) each)."""
    photo = fake.attachment(image_bytes(800, 600))
    attachments = [photo]
    given = [{"name": "image", "type": 11, "value": photo["id"]},
             {"name": "prompt", "type": 3, "value": "a cat dances"}]
    given += [{"name": name, "type": kind, "value": value} for name, kind, value in options]
    if end_image:
        last = fake.attachment(image_bytes(640, 480, "PNG"))
        attachments.append(last)
        given.append({"name": "end_image", "type": 11, "value": last["id"]})
    return fake.slash("animate", given, user=user, attachments=attachments)


V3_LONG_WITH_SOUND = (("model", 3, "v3"), ("duration", 4, 12), ("sound", 5, True), ("aspect", 3, "9:16"))


async def video_message(fake, filename):
    return await until(lambda: next((m for m in fake.messages.values()
                                     if any(a["filename"] == filename for a in m["attachments"])), None))


def autocompleting(fake, focused, value, *filled, user=ALICE):
    """An autocomplete interaction (type 4) of /animate: ``focused`` being typed, ``filled``
    ((name, type, value) each) already given. Discord sends what is typed as a string, also
    for an integer option."""
    kinds = {"model": 3, "duration": 4, "aspect": 3}
    options = [{"name": name, "type": kind, "value": given} for name, kind, given in filled]
    options.append({"name": focused, "type": kinds[focused], "value": value, "focused": True})
    return fake.interaction(4, {"id": "1", "name": "animate", "type": 1, "options": options}, user=user)


async def suggested(fake, adapter, payload):
    """The autocomplete answer Discord received: (name, value) of each choice."""
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake, payload["token"]))
    assert answer["type"] == 8  # APPLICATION_COMMAND_AUTOCOMPLETE_RESULT
    choices = answer["data"]["choices"]
    assert len(choices) <= 25 and all(1 <= len(c["name"]) <= 100 for c in choices)
    return [(c["name"], c["value"]) for c in choices]


# --- a live-only model end to end --------------------------------------------------------

async def test_v3_with_12_seconds_sound_and_portrait_goes_end_to_end(run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    payload = animate(fake_discord, *V3_LONG_WITH_SOUND)
    feed(adapter, payload)
    upload = await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST")
                                  if c["files"]])
    [submission] = simulator.submissions
    assert submission["model"] == V3
    body = submission["body"]
    assert body["duration"] == 12 and type(body["duration"]) is int  # an integer, as v3's schema has it
    assert body["sound"] is True and body["aspect_ratio"] == "9:16" and body["prompt"] == "a cat dances"
    assert list(upload[0]["files"]) == ["kling-1.mp4"]  # the video is the interaction's follow-up
    assert upload[0]["json"]["content"].startswith(f"<@{ALICE}>")
    # 12 s with sound at $0.56 per 5 s: $2.016, i.e. 9 credits of $0.25, rounded up
    assert (await engine.balance(who(ALICE))).total == 1


async def test_again_on_a_v3_video_repeats_its_length_sound_and_shape(run_discord, dc_settings, fake_discord,
                                                                      simulator):
    engine, adapter = await run_discord(replace(dc_settings, quota=replace(dc_settings.quota, daily_credits=30)))
    feed(adapter, animate(fake_discord, *V3_LONG_WITH_SOUND))
    message = await video_message(fake_discord, "kling-1.mp4")
    press = fake_discord.interaction(3, {"custom_id": "kling:again:1", "component_type": 2},
                                     user=BOB, message=message)
    feed(adapter, press)
    await video_message(fake_discord, "kling-2.mp4")
    first, again = simulator.submissions
    assert again["model"] == V3
    picked = ("duration", "sound", "aspect_ratio", "prompt")
    assert {k: again["body"][k] for k in picked} == {k: first["body"][k] for k in picked} == \
        {"duration": 12, "sound": True, "aspect_ratio": "9:16", "prompt": "a cat dances"}
    assert (await engine.balance(who(BOB))).total == 30 - 9  # whoever presses pays the same price


# --- autocomplete follows the chosen model ----------------------------------------------

async def test_duration_choices_are_the_chosen_models_lengths(run_discord, fake_discord):
    _, adapter = await run_discord()
    v3 = await suggested(fake_discord, adapter, autocompleting(fake_discord, "duration", "", ("model", 3, "v3")))
    assert [value for _, value in v3] == list(range(3, 16)) and v3[9] == ("12 s", 12)
    v21 = await suggested(fake_discord, adapter, autocompleting(fake_discord, "duration", "", ("model", 3, "v2.1")))
    assert v21 == [("5 s", 5), ("10 s", 10)]
    default = await suggested(fake_discord, adapter, autocompleting(fake_discord, "duration", ""))
    assert default == v21  # no model yet: /animate's default model, v2.1
    typed = await suggested(fake_discord, adapter, autocompleting(fake_discord, "duration", "1", ("model", 3, "v3")))
    assert [value for _, value in typed] == [10, 11, 12, 13, 14, 15]


async def test_aspect_choices_are_the_chosen_models_ratios(run_discord, fake_discord):
    _, adapter = await run_discord()
    v3 = await suggested(fake_discord, adapter, autocompleting(fake_discord, "aspect", "", ("model", 3, "v3")))
    assert v3 == [("16:9", "16:9"), ("9:16", "9:16"), ("1:1", "1:1")]
    v21 = autocompleting(fake_discord, "aspect", "", ("model", 3, "v2.1"))
    assert await suggested(fake_discord, adapter, v21) == []
    unknown = autocompleting(fake_discord, "aspect", "", ("model", 3, "no such model"))
    assert await suggested(fake_discord, adapter, unknown) == []


async def test_model_choices_show_prices_and_follow_what_is_typed(run_discord, fake_discord):
    engine, adapter = await run_discord()
    offered = await suggested(fake_discord, adapter, autocompleting(fake_discord, "model", ""))
    assert [value for _, value in offered] == engine.catalog.model_keys("animate")
    assert ("v3.0-pro (3 credits / 5 s)", "v3.0-pro") in offered  # $0.56 per 5 s = 2.24 credits, rounded up
    assert ("master (4 credits / 5 s)", "master") in offered
    assert await suggested(fake_discord, adapter, autocompleting(fake_discord, "model", "v3")) == \
        [("v3.0-pro (3 credits / 5 s)", "v3.0-pro")]


async def test_autocomplete_answers_follow_the_spec(run_discord, fake_discord):
    """The recorded type-8 answers validate against Discord's OpenAPI document (the fake
    checks every request; here the check is also run on them directly)."""
    _, adapter = await run_discord()
    for payload in (autocompleting(fake_discord, "duration", "", ("model", 3, "v3")),
                    autocompleting(fake_discord, "aspect", "", ("model", 3, "v3")),
                    autocompleting(fake_discord, "model", "")):
        await suggested(fake_discord, adapter, payload)
    answers = fake_discord.to("/callback", "POST")
    assert len(answers) == 3
    for call in answers:
        route = spec_check.discord_route(call["path"].removeprefix(spec_check.DISCORD_API_PREFIX))
        assert spec_check.DiscordRules._body_problems(route, "POST", call["json"]) == []
    assert fake_discord.violations == []


# --- refused before any download, at no cost ---------------------------------------------

@pytest.mark.parametrize("options, end_image, refusal", [
    ((("model", 3, "v3"), ("duration", 4, 20)), False,
     messages.duration_choices(tuple(range(3, 16)), 20)),
    ((("model", 3, "v3"), ("aspect", 3, "4:3")), False,
     messages.aspect_choices("Kling v3.0 Pro Image-to-Video", ("16:9", "9:16", "1:1"), "4:3")),
    ((("model", 3, "turbo"),), True, None),  # an end image on a model without one
    ((("model", 3, "turbo"), ("sound", 5, True)), False, None),
    ((("model", 3, "v2.1"), ("duration", 4, 7)), False, messages.duration_choices((5, 10), 7)),
], ids=["duration 20 on v3", "aspect 4:3 on v3", "end image on turbo", "sound on turbo", "duration 7 on v2.1"])
async def test_combinations_the_model_does_not_take_are_refused_first(
        run_discord, dc_settings, fake_discord, simulator, options, end_image, refusal):
    engine, adapter = await run_discord(replace(dc_settings, models=ModelsSettings(enabled=SEEDS_AND_TURBO)))
    turbo = engine.catalog.resolve_model("turbo", "animate")
    assert turbo.id == TURBO
    if refusal is None and end_image:
        refusal = messages.end_image_only(engine.catalog.models_taking("end_image"))
    elif refusal is None:
        refusal = messages.takes_no_sound(turbo.title)
    payload = animate(fake_discord, *options, end_image=end_image)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["type"] == 4 and answer["data"]["flags"] & 64  # a private answer, not a deferral
    assert answer["data"]["content"] == refusal
    assert fake_discord.to("/attachments/") == []  # neither photo was downloaded
    assert simulator.submissions == [] and not simulator.uploads
    assert (await engine.balance(who(ALICE))).total == 10


# --- /models and the command tree ---------------------------------------------------------

async def test_models_lists_the_offer_with_features_and_prices(run_discord, fake_discord):
    engine, adapter = await run_discord()
    payload = fake_discord.slash("models", [], user=ALICE)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["type"] == 4 and answer["data"]["flags"] & 64
    text = answer["data"]["content"]
    assert text == engine.models_text()
    lines = text.splitlines()
    v3 = next(line for line in lines if line.startswith("v3.0-pro "))
    assert "sound" in v3 and "up to 15 s" in v3 and v3.endswith("3 credits per 5 s")
    assert next(line for line in lines if line.startswith("v2.1 (default)")).endswith("1 credit per 5 s")
    assert any(line.startswith("master ") and line.endswith("4 credits per 5 s") for line in lines)


async def test_the_synced_animate_options_autocomplete_instead_of_fixed_choices(run_discord, fake_discord):
    await run_discord()
    [sync] = fake_discord.to(f"/applications/{APP_ID}/guilds/{GUILD}/commands", "PUT")
    commands = {c["name"]: c for c in sync["json"]}
    assert "models" in commands and commands["models"]["description"] == messages.COMMANDS["models"]
    options = {o["name"]: o for o in commands["animate"]["options"]}
    for name, kind in (("model", 3), ("duration", 4), ("aspect", 3)):
        assert options[name]["type"] == kind and options[name]["autocomplete"] is True
        assert not options[name].get("choices")  # Discord refuses choices next to autocomplete
    assert options["sound"]["type"] == 5  # a boolean
    route = spec_check.discord_route(sync["path"].removeprefix(spec_check.DISCORD_API_PREFIX))
    assert spec_check.DiscordRules._body_problems(route, "PUT", sync["json"]) == []


async def test_sound_off_on_a_silent_model_is_no_reason_to_refuse(run_discord, fake_discord, simulator):
    """sound: False asks for what v2.1 makes anyway: the video is made, no sound field sent."""
    engine, adapter = await run_discord()
    payload = animate(fake_discord, ("model", 3, "v2.1"), ("sound", 5, False))
    feed(adapter, payload)
    await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST") if c["files"]])
    [submission] = simulator.submissions
    assert submission["model"] == "kwaivgi/kling-v2.1-i2v-standard" and "sound" not in submission["body"]


async def test_a_refused_sound_names_the_option_as_discord_shows_it(run_discord, fake_discord):
    """The refusal is shared by every chat: it names no text flag (Discord has no --sound)."""
    _, adapter = await run_discord()
    payload = animate(fake_discord, ("model", 3, "v2.1"), ("sound", 5, True))
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["data"]["content"] == \
        "Kling v2.1 standard makes no sound; ask without sound, or pick a model that does (/models)."


O1 = "kwaivgi/kling-video-o1-std/image-to-video"


async def test_an_end_image_reaches_o1_as_its_last_image_also_again(run_discord, dc_settings, fake_discord,
                                                                    simulator):
    """o1 calls the end frame ``last_image``: /animate's end_image goes there, and "again" sends it again."""
    settings = replace(dc_settings, models=ModelsSettings(enabled=[*SEEDS_AND_TURBO, O1]),
                       quota=replace(dc_settings.quota, daily_credits=30))
    _, adapter = await run_discord(settings)
    feed(adapter, animate(fake_discord, ("model", 3, "o1"), ("duration", 4, 7), end_image=True))
    message = await video_message(fake_discord, "kling-1.mp4")
    feed(adapter, fake_discord.interaction(3, {"custom_id": "kling:again:1", "component_type": 2},
                                           user=ALICE, message=message))
    await video_message(fake_discord, "kling-2.mp4")
    for submission in simulator.submissions:
        assert submission["model"] == O1 and submission["body"]["duration"] == 7
        assert submission["body"]["last_image"] and "end_image" not in submission["body"]
    def uploaded(url):  # the simulator's media URL: /media/<token>/<name>
        return simulator.uploads[url.split("/media/")[1].split("/")[0]][0]

    first, again = simulator.submissions
    # the kept end frame went again, as the end frame (not as the photo)
    assert uploaded(again["body"]["last_image"]) == uploaded(first["body"]["last_image"])
    assert uploaded(again["body"]["last_image"]) != uploaded(again["body"]["image"])


async def test_again_on_a_video_of_a_withdrawn_model_is_refused_first(run_discord, dc_settings, fake_discord,
                                                                       simulator):
    """WaveSpeed stopped listing v3 after the video: "again" says so privately, before any
    public "thinking…" message, and charges nothing."""
    engine, adapter = await run_discord(replace(dc_settings, quota=replace(dc_settings.quota, daily_credits=30)))
    feed(adapter, animate(fake_discord, *V3_LONG_WITH_SOUND))
    message = await video_message(fake_discord, "kling-1.mp4")
    simulator.remove_model(V3)
    await engine.live.refresh()
    press = fake_discord.interaction(3, {"custom_id": "kling:again:1", "component_type": 2},
                                     user=BOB, message=message)
    feed(adapter, press)
    [answer] = await until(lambda: callbacks(fake_discord, press["token"]))
    assert answer["type"] == 4 and answer["data"]["flags"] & 64
    assert answer["data"]["content"] == messages.model_not_offered("v3.0-pro")  # gone from the listing: its short name
    assert len(simulator.submissions) == 1 and (await engine.balance(who(BOB))).total == 30
