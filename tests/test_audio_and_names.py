"""#14 items 5 and 16: audio priced by what it holds, not by what its header says; effect
names that can be typed back as the bot shows them."""

# The Telegram fixtures come from tests/test_telegram.py.

from __future__ import annotations

import io

import av
import pytest

from bot import messages
from bot.jobs import Accepted, GenerationRequest, Rejected
from bot.media import prepare_audio
from tests.conftest import user
from tests.helpers import audio_bytes, image_bytes, settled

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
    assert engine.balance(user()).total == 10


async def test_an_mp3_that_says_2_s_but_holds_20_s_costs_20_s(engine, courier, simulator):
    answer = await engine.accept(avatar_request(lying_mp3(2.0, 20.0)))
    assert isinstance(answer, Accepted)
    assert answer.job.cost == 4  # 1 credit per 5 s started, of what it holds (the header: 1)
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    await settled(engine, answer.job.id)
    assert engine.balance(user()).total == 6


@pytest.mark.parametrize("fmt, codec", [("mp3", "libmp3lame"), ("ogg", "libopus"), ("wav", "pcm_s16le")])
def test_honest_audio_is_measured_as_before(fmt, codec):
    rate = 48000 if codec == "libopus" else 16000
    media = prepare_audio(audio_bytes(12.0, fmt=fmt, codec=codec, rate=rate), max_seconds=30,
                          max_input_bytes=10 * 1024 * 1024)
    assert 11.9 < media.seconds < 12.4
