"""#14 items 5 and 16: audio priced by what it holds, not by what its header says; effect
names that can be typed back as the bot shows them."""

# The Telegram fixtures come from tests/test_telegram.py.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import io

import av
import pytest

from adapters.console import PLATFORM as CONSOLE
from adapters.console import ConsoleChat, ConsoleCourier
from adapters.text_commands import parse_effect
from bot import catalog, messages
from bot.catalog import ValidationError
from bot.jobs import Accepted, GenerationRequest, Rejected, UserRef
from bot.media import prepare_audio
from tests.conftest import user
from tests.helpers import audio_bytes, image_bytes, settled
from tests.test_telegram import ALICE, run_bot, telegram, tg_settings  # noqa: F401

# --- 5. audio whose header lies about its length ------------------------------------------------


def lying_mp3(declared: float, real: float) -> bytes:
    """An MP3 whose Info (Xing) header counts the frames of ``declared`` seconds while its
    frames last ``real`` seconds: a short file's header and frames, then a long file's
    frames. The header's byte count is set to the whole file, so FFmpeg's check for
    concatenated files passes and the container declares the short length."""
    short = audio_bytes(declared, fmt="mp3", codec="libmp3lame", rate=44100)
    long = audio_bytes(real - declared, fmt="mp3", codec="libmp3lame", rate=44100)
    with av.open(io.BytesIO(long)) as container:
        first_frame = next(container.demux(container.streams.audio[0])).pos  # after its own header
    lying = bytearray(short + long[first_frame:])
    info = lying.find(b"Info")
    assert int.from_bytes(lying[info + 4:info + 8], "big") & 0b11 == 0b11  # frames and bytes fields
    lying[info + 12:info + 16] = len(lying).to_bytes(4, "big")
    with av.open(io.BytesIO(bytes(lying))) as container:  # the lie works: FFmpeg believes the header
        assert abs(container.duration / av.time_base - declared) < 0.1
    return bytes(lying)


def avatar_request(audio: bytes) -> GenerationRequest:
    return GenerationRequest(user(), "avatar", image_bytes(), audio=audio, reply_to={"chat": 42})


def test_the_lying_mp3_is_measured_by_its_frames():
    media = prepare_audio(lying_mp3(2.0, 20.0), max_seconds=30, max_input_bytes=10 * 1024 * 1024)
    assert 19.5 < media.seconds < 21


async def test_an_mp3_that_says_2_s_but_holds_62_s_is_refused_before_any_credit(engine, simulator):
    answer = await engine.accept(avatar_request(lying_mp3(2.0, 62.0)))
    assert isinstance(answer, Rejected)
    assert answer.text == messages.audio_over_limit(30.0)
    assert simulator.submissions == [] and simulator.uploads == {}
    assert (await engine.balance(user())).total == 10


async def test_an_mp3_that_says_2_s_but_holds_20_s_costs_20_s(engine, courier, simulator):
    answer = await engine.accept(avatar_request(lying_mp3(2.0, 20.0)))
    assert isinstance(answer, Accepted)
    assert answer.job.cost == 4  # 1 credit per 5 s started, of what it holds (the header: 1)
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    await settled(engine, answer.job.id)
    assert (await engine.balance(user())).total == 6


@pytest.mark.parametrize("fmt, codec", [("mp3", "libmp3lame"), ("ogg", "libopus"), ("wav", "pcm_s16le")])
def test_honest_audio_is_measured_as_before(fmt, codec):
    rate = 48000 if codec == "libopus" else 16000
    media = prepare_audio(audio_bytes(12.0, fmt=fmt, codec=codec, rate=rate), max_seconds=30,
                          max_input_bytes=10 * 1024 * 1024)
    assert 11.9 < media.seconds < 12.4


# --- 16. effect names typed back as the bot shows them -------------------------------------------

def shown_effect_names() -> list[str]:
    """Every effect name the bot shows: the /effects list (console), which the menus'
    buttons and Discord's choices take their titles from."""
    listing = messages.effects_list([catalog.effect_title(e) for e in catalog.EFFECTS])
    names = [name for line in listing.splitlines()[1:] for name in line.split(", ")]
    assert len(names) == len(catalog.EFFECTS)
    return names


def typed_variants(title: str) -> list[str]:
    return [title, title.lower(), title.upper(), title.replace("'", "\u2019")]


def test_every_shown_effect_name_typed_as_shown_resolves_through_the_text_parser():
    effects = catalog.BUILT_IN.resolve_model(None, "effect")
    for name, api in zip(shown_effect_names(), catalog.EFFECTS, strict=True):
        for typed in typed_variants(name):
            args = parse_effect(typed)
            assert catalog.check_params(effects, args.params)["effect_scene"] == api, typed


@pytest.mark.parametrize("typo", ["magic brom", "lets rid", "Jely press", "boyfrend", "let\u2019s rde"])
def test_did_you_mean_suggests_names_that_work_as_typed(typo):
    effects = catalog.BUILT_IN.resolve_model(None, "effect")
    with pytest.raises(ValidationError) as refused:
        catalog.check_params(effects, parse_effect(typo).params)
    answer = str(refused.value)
    assert "Did you mean" in answer, answer
    suggested = answer.split("Did you mean", 1)[1].strip(" ?")
    if suggested.startswith("one of: "):  # one of: jelly press, jelly squish?
        hints = suggested.removeprefix("one of: ").split(", ")
    else:  # 'magic broom'?
        hints = [suggested.removeprefix("'").removesuffix("'")]
    for hint in hints:
        assert catalog.check_params(effects, parse_effect(hint).params)["effect_scene"] in catalog.EFFECTS, hint


async def test_console_effect_with_a_name_of_two_words_and_a_photo(make_engine, simulator, tmp_path):
    engine = await make_engine(start=False)
    out = io.StringIO()
    courier = ConsoleCourier(out, tmp_path / "videos")
    engine.register(CONSOLE, courier)
    await engine.start()
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(image_bytes())
    chat = ConsoleChat(engine, courier, UserRef(CONSOLE, "me", "me"), image_bytes(), out=out)
    await chat.handle(f"/effect Magic broom {photo}")
    await chat.handle("/effect LET\u2019S RIDE")  # the default photo
    await asyncio.wait_for(chat.finish(), 60)
    assert [s["body"]["effect_scene"] for s in simulator.submissions] == ["magic_broom", "let's_ride"], out.getvalue()


async def test_telegram_effect_names_as_shown_and_master_says_effects_have_no_model(run_bot, telegram, simulator):
    await run_bot()
    telegram.user_message(ALICE, ALICE, caption="/effect Let\u2019s ride", photo=image_bytes())
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, text="/effect MAGIC BROOM", reply_to=photo)
    await telegram.wait_for(lambda: len(simulator.submissions) == 2)
    assert sorted(s["body"]["effect_scene"] for s in simulator.submissions) == ["let's_ride", "magic_broom"]

    telegram.user_message(ALICE, ALICE, text="/effect hula --model master", reply_to=photo)
    refusal = messages.no_model_choice("effect", "Kling Effects")
    await telegram.wait_for(lambda: [c for c in telegram.calls if refusal in str(c["params"].get("text", ""))])
    assert "Choose one of" not in " ".join(str(c["params"].get("text", "")) for c in telegram.calls)
    assert len(simulator.submissions) == 2
