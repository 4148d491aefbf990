"""#16 from Telegram and the console: a model only WaveSpeed's live list has, its own options
(`--sound`, a 12 s duration, `--aspect`) reaching the simulator under its own field names,
refusals before any download, /models and /help, and the quoted price shown and charged.
The real python-telegram-bot against the fake Bot API; the real ConsoleChat; the simulator."""

from __future__ import annotations

import io
from dataclasses import replace
from decimal import Decimal

import aiohttp
import pytest

from adapters.console import PLATFORM as CONSOLE
from adapters.console import ConsoleChat, ConsoleCourier
from adapters.telegram import TelegramAdapter
from bot import messages
from bot.config import ModelsSettings
from bot.jobs import UserRef
from tests.conftest import API_KEY
from tests.fake_telegram import FakeTelegram
from tests.helpers import image_bytes, mp4_info

TOKEN = "123456:TEST-telegram-token-SECRET"
ALICE = 1001
V3 = "kwaivgi/kling-v3.0-pro/image-to-video"
CAPTION = "/animate --model v3 --duration 12 --sound --aspect 9:16 a cat dances"
# The offer of these tests: effects, v2.1, v3.0 pro (only in the live list), o1 and v2.5 turbo.
ENABLED = ["kwaivgi/kling-effects", "kwaivgi/kling-v2.1-*", "*v3.0-pro*", "*o1-std*", "*v2.5-turbo-pro*"]
DAILY = 10  # the default daily credits


@pytest.fixture
async def telegram():
    fake = FakeTelegram(TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def live_settings(settings):
    return replace(settings, models=ModelsSettings(enabled=ENABLED))


@pytest.fixture
def tg_settings(live_settings, telegram):
    return replace(live_settings, telegram=replace(
        live_settings.telegram, token=TOKEN, base_url=telegram.base_url,
        base_file_url=telegram.base_file_url, progress_interval=0.0))


@pytest.fixture
def run_bot(tg_settings, adapter_runner):
    return lambda custom=None: adapter_runner(custom or tg_settings, TelegramAdapter)


def alice() -> UserRef:
    return UserRef("telegram", str(ALICE))


def _replies(telegram) -> list[str]:
    return [c["params"]["text"] for c in telegram.calls_to("sendMessage")]


def _edits(telegram) -> list[str]:
    return [c["params"]["text"] for c in telegram.calls_to("editMessageText")]


def _downloads(telegram) -> list[str]:
    """Every getFile call and file download the bot made."""
    return [c["method"] for c in telegram.calls_to("getFile")] + \
        [path for path in telegram.paths if path.startswith("/file/")]


async def _quota(telegram) -> str:
    shown = len(_replies(telegram))
    telegram.user_message(ALICE, ALICE, text="/quota")
    await telegram.wait_for(lambda: len(_replies(telegram)) > shown)
    return _replies(telegram)[-1]


async def _simulator_quote(simulator, model_id: str, inputs: dict) -> Decimal:
    """What the simulator quotes, asked as WaveSpeed is (POST /api/v3/model/price)."""
    async with aiohttp.ClientSession() as session, session.post(
            f"{simulator.base_url}/api/v3/model/price", json={"model_id": model_id, "inputs": inputs},
            headers={"Authorization": f"Bearer {API_KEY}"}) as answer:
        return Decimal(str((await answer.json())["data"]["price"]))


# --- 1 + 4: a live-only model end to end, the quote shown and charged ------------------------

@pytest.mark.parametrize("how", ["caption", "reply"])
async def test_a_live_only_model_goes_end_to_end_with_its_own_options(run_bot, telegram, simulator, how):
    engine, _ = await run_bot()
    photo = image_bytes(800, 600)
    if how == "caption":
        sent = telegram.user_message(ALICE, ALICE, caption=CAPTION, photo=photo)
    else:
        sent = telegram.user_message(ALICE, ALICE, photo=photo, push=False)
        telegram.user_message(ALICE, ALICE, text=CAPTION, reply_to=sent)

    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))

    assert video["params"]["reply_parameters"]["message_id"] == sent["message_id"]
    assert mp4_info(video["files"]["video"])[0] == "h264"
    [submission] = simulator.submissions
    assert submission["model"] == V3
    body = submission["body"]
    assert body["duration"] == 12 and type(body["duration"]) is int  # an integer, as the schema says
    assert body["sound"] is True
    assert body["aspect_ratio"] == "9:16"
    assert body["prompt"] == "a cat dances"
    assert photo in [data for data, _ in simulator.uploads.values()]
    # The quote decided the price: $0.56 / 5 s x 12 s x 1.5 with sound = $2.016 -> 9 credits of $0.25.
    quoted = await _simulator_quote(simulator, V3, {k: v for k, v in body.items() if k != "image"})
    assert quoted == Decimal("2.016")
    queued = _edits(telegram)[0]
    assert queued.startswith("Job 1 queued (v3.0-pro: a cat dances)"), queued
    assert "It costs 9 credits; 1 left." in queued
    assert (await _quota(telegram)).startswith("You have 1 credit.")  # exactly what was shown was reserved
    job = await engine.store.job(1)
    assert job.cost == 9 and job.quote_usd == Decimal("2.016")


async def test_again_under_a_live_only_models_video_repeats_its_options_at_the_quoted_price(
        run_bot, telegram, simulator):
    engine, _ = await run_bot()
    await engine.grant(alice(), 20)
    telegram.user_message(ALICE, ALICE, caption=CAPTION, photo=image_bytes(800, 600))
    [call] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    await telegram.wait_for(lambda: _edits(telegram)[-1].endswith("done."))
    [again] = [b for row in call["params"]["reply_markup"]["inline_keyboard"] for b in row
               if b["callback_data"].startswith("again:")]
    assert again["text"] == messages.priced(messages.BUTTON_AGAIN, 9)
    video = next(m for m in telegram.messages.values() if "video" in m)
    assert (await engine.balance(alice())).total == DAILY + 20 - 9

    telegram.press_button(ALICE, video, again["callback_data"])
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)

    first, second = simulator.submissions
    assert second["model"] == V3
    assert {k: v for k, v in second["body"].items() if k != "image"} == \
        {k: v for k, v in first["body"].items() if k != "image"}
    assert (await engine.balance(alice())).total == DAILY + 20 - 18


# --- 2: refused before any download, at no cost ------------------------------------------------

@pytest.mark.parametrize(("options", "refusal"), [
    ("--model v3 --duration 20", "Duration must be from 3 to 15 seconds (got 20)."),
    ("--model v3 --aspect 4:3", "Kling v3.0 Pro Image-to-Video makes 16:9 or 9:16 or 1:1 videos (got 4:3)."),
    ("--model turbo --sound", "Kling v2.5 Turbo Pro Image-to-Video makes no sound; ask without sound, "
                              "or pick a model that does (/models)."),
    ("--model v2.1 --duration 7", "Duration must be 5 or 10 seconds (got 7)."),
    ("--model v2.1 --aspect 9:16", "Kling v2.1 standard follows the photo's shape; leave out the aspect ratio."),
])
@pytest.mark.parametrize("how", ["caption", "reply"])
async def test_what_the_model_does_not_take_is_refused_before_any_download(
        run_bot, telegram, simulator, options, refusal, how):
    engine, _ = await run_bot()
    command = f"/animate {options} a cat dances"
    if how == "caption":
        telegram.user_message(ALICE, ALICE, caption=command, photo=image_bytes())
    else:
        photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
        telegram.user_message(ALICE, ALICE, text=command, reply_to=photo)

    await telegram.wait_for(lambda: _replies(telegram))

    assert _replies(telegram) == [refusal]
    assert (await _quota(telegram)).startswith(f"You have {DAILY} credits.")
    assert (await engine.balance(alice())).total == DAILY
    assert _downloads(telegram) == []
    assert simulator.submissions == [] and simulator.uploads == {}


async def test_no_sound_on_a_silent_model_is_what_it_makes_anyway(run_bot, telegram, simulator):
    """``--no-sound`` asks for what a model without sound makes: taken, not refused with
    "leave out --sound" (a word the user never typed); nothing extra reaches the API."""
    await run_bot()
    telegram.user_message(ALICE, ALICE, caption="/animate --no-sound a cat dances", photo=image_bytes())
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    [submission] = simulator.submissions
    assert submission["model"] == "kwaivgi/kling-v2.1-i2v-standard"
    assert "sound" not in submission["body"]


# --- 3: /models and /help ---------------------------------------------------------------------

async def test_models_lists_the_offer_with_what_each_adds_and_the_quoted_price(run_bot, telegram, simulator):
    await run_bot()
    telegram.user_message(ALICE, ALICE, text="/models")
    [text] = await telegram.wait_for(lambda: _replies(telegram))

    lines = text.splitlines()
    assert lines[0] == "Models on offer (use the short name with --model):"
    v3 = next(line for line in lines if line.startswith("v3.0-pro"))
    assert "sound" in v3 and "1080p" in v3 and "up to 15 s" in v3
    # v3.0 pro's quote for 5 s without sound is its base price, $0.56: 3 credits of $0.25
    assert await _simulator_quote(simulator, V3, {"prompt": "x", "duration": 5}) == Decimal("0.56")
    assert v3.endswith("· 3 credits per 5 s")
    assert any(line.startswith("v2.1 (default) · ") and line.endswith("· 1 credit per 5 s") for line in lines)
    o1 = next(line for line in lines if line.startswith("o1-std"))
    assert "sound" in o1 and "end frame" in o1 and "up to 15 s" in o1
    assert any(line.startswith("v2.5-turbo-pro") for line in lines)
    assert not any(line.startswith(("master", "v1.6", "avatar")) for line in lines)  # not enabled


async def test_help_lists_sound_and_aspect_when_an_offered_model_takes_them(run_bot, telegram, tg_settings):
    await run_bot()
    telegram.user_message(ALICE, ALICE, text="/help")
    [text] = await telegram.wait_for(lambda: _replies(telegram))
    options = next(line for line in text.splitlines() if line.startswith("/animate"))
    assert "--sound" in options
    assert options.endswith("--aspect 16:9|9:16|1:1")  # in the models' own order
    assert "--duration 3-15" in options and "v3.0-pro" in options
    assert "/models" in text


async def test_help_leaves_out_sound_and_aspect_when_no_offered_model_takes_them(
        run_bot, telegram, tg_settings):
    await run_bot(replace(tg_settings, models=ModelsSettings(enabled=["kwaivgi/kling-effects", "*v2.1*"])))
    telegram.user_message(ALICE, ALICE, text="/help")
    [text] = await telegram.wait_for(lambda: _replies(telegram))
    options = next(line for line in text.splitlines() if line.startswith("/animate"))
    assert "--sound" not in options and "--aspect" not in options
    assert "--duration 5|10" in options


# --- the console (the demo's chat) ---------------------------------------------------------------

@pytest.fixture
async def console(make_engine, live_settings, tmp_path):
    engine = await make_engine(live_settings, start=False)
    out = io.StringIO()
    courier = ConsoleCourier(out, tmp_path / "saved")
    engine.register(CONSOLE, courier)
    await engine.start()
    return ConsoleChat(engine, courier, UserRef(CONSOLE, "me", "me"), image_bytes(800, 600), out=out), out


async def test_console_animates_with_a_live_only_model_and_its_options(console, simulator, tmp_path):
    chat, out = console
    await chat.handle("/animate --model v3 --duration 12 --sound --aspect 9:16 a cat dances")
    await chat.finish()

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Job 1 queued (v3.0-pro: a cat dances)") and "It costs 9 credits; 1 left." in lines[0]
    assert any(line.startswith("[job 1] done: ") for line in lines), lines
    [submission] = simulator.submissions
    assert submission["model"] == V3
    assert {k: submission["body"][k] for k in ("duration", "sound", "aspect_ratio")} == {
        "duration": 12, "sound": True, "aspect_ratio": "9:16"}
    [saved] = (tmp_path / "saved").iterdir()
    assert mp4_info(saved.read_bytes())[0] == "h264"
    await chat.handle("/quota")
    assert out.getvalue().splitlines()[-1].startswith("You have 1 credit.")


async def test_console_models_and_refusals(console, simulator):
    chat, out = console
    await chat.handle("/models")
    await chat.handle("/animate --model v3 --duration 20 a cat")
    await chat.handle("/animate --model turbo --sound a cat")
    await chat.handle("/quota")
    text = out.getvalue()
    assert text.startswith("Models on offer (use the short name with --model):\n")
    assert any(line.startswith("v3.0-pro") and line.endswith("· 3 credits per 5 s") for line in text.splitlines())
    assert "Duration must be from 3 to 15 seconds (got 20)." in text
    assert "makes no sound" in text
    assert text.splitlines()[-1].startswith(f"You have {DAILY} credits.")
    assert simulator.submissions == []

