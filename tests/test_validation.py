"""Bad input: a readable refusal, no credit spent, nothing sent to WaveSpeed."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from bot.catalog import Params
from bot.jobs import GenerationRequest, Rejected
from tests.conftest import effect_request, user
from tests.helpers import audio_bytes, image_bytes


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file that claims huge dimensions (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width // 8 + 1) * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _animate(prompt="a cat dances", model=None, image=None, **params):
    return GenerationRequest(user(), "animate", image or image_bytes(),
                             Params(prompt=prompt, **params), model=model)


CASES = {
    "unknown effect": (lambda: effect_request("hulla"), "Unknown effect 'hulla'. Did you mean 'hula'?"),
    "no effect name": (lambda: effect_request(""), "Name an effect"),
    "prompt over 2500": (lambda: _animate("x" * 2501), "Prompt is 2501 characters; the limit is 2500."),
    "negative prompt over 2500": (lambda: _animate(negative_prompt="y" * 2600), "Negative prompt is 2600 characters"),
    "guidance above 1": (lambda: _animate(guidance=1.5), "Guidance must be between 0 and 1 (got 1.5)"),
    "guidance below 0": (lambda: _animate(guidance=-0.1), "Guidance must be between 0 and 1"),
    "duration 7": (lambda: _animate(duration=7), "Duration must be 5 or 10 seconds (got 7)."),
    "unknown model": (lambda: _animate(model="v9"), "Unknown model 'v9'. Choose one of: v1.6, v2.1, master, v3.0-pro."),
    "v2.1 without prompt": (lambda: _animate(prompt=None, model="v2.1"), "needs a prompt"),
    "end image on v1.6": (lambda: GenerationRequest(user(), "animate", image_bytes(), Params(prompt="go"),
                                                    model="v1.6", end_image=image_bytes()),
                          "Only the 'master' or 'v3.0-pro' model takes an end image."),
    "tiny image": (lambda: effect_request(image=image_bytes(200, 150)),
                   "The photo is 200×150 px; Kling needs at least 300×300 px."),
    "thin side": (lambda: effect_request(image=image_bytes(1200, 299)), "at least 300×300 px"),
    "master aspect": (lambda: _animate(model="master", image=image_bytes(1500, 500)),
                      "this model needs a shape between 1:2.5 and 2.5:1"),
    "not an image": (lambda: effect_request(image=b"hello, I am a text file\n" * 50),
                     "could not be read: it is damaged or not an image"),
    "corrupt bytes": (lambda: effect_request(image=b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20),
                      "could not be read"),
    "truncated jpeg": (lambda: effect_request(image=image_bytes(800, 600, noise=True)[:5000]),
                       "could not be read"),
    "empty file": (lambda: effect_request(image=b""), "is empty"),
    "huge file": (lambda: effect_request(image=b"\xff\xd8" + b"0" * (21 * 1024 * 1024)),
                  "The photo is 21.0 MB; the bot accepts files up to 20.0 MB."),
    "decompression bomb": (lambda: effect_request(image=_png_header_only(30000, 30000)),
                           "too many pixels"),
    "heic/unsupported": (lambda: effect_request(image=b"\x00\x00\x00\x18ftypheic" + b"\x00" * 400),
                         "could not be read"),
    "avatar without audio": (lambda: GenerationRequest(user(), "avatar", image_bytes()),
                             "needs an audio clip"),
    "audio too long": (lambda: GenerationRequest(user(), "avatar", image_bytes(), audio=audio_bytes(65)),
                       "The audio is 65 s long; the limit is 30 s."),
    "audio not audio": (lambda: GenerationRequest(user(), "avatar", image_bytes(), audio=b"nope" * 100),
                        "The audio could not be read"),
    "audio format refused": (lambda: GenerationRequest(user(), "avatar", image_bytes(),
                                                       audio=audio_bytes(2, "flac", "flac")),
                             "The audio could not be read. Send an MP3, WAV, OGG/Opus or M4A clip."),
    "video as audio": (lambda: GenerationRequest(user(), "avatar", image_bytes(),
                                                 audio=audio_bytes(2, "mp4", "aac", with_video=True)),
                       "That file has video in it."),
}


# The model list and price quotes cost nothing: read at start and for menus, refused or not.
FREE_READS = ("/api/v3/models", "/api/v3/model/price")


@pytest.mark.parametrize("case", list(CASES))
async def test_refusal_is_readable_costs_nothing_and_sends_nothing(engine, simulator, case):
    make, expected = CASES[case]
    before = (await engine.balance(user())).total

    answer = await engine.accept(make())

    assert isinstance(answer, Rejected), answer
    assert expected in answer.text
    assert (await engine.balance(user())).total == before
    assert engine.store.db["jobs"].count == 0
    assert not [r for r in simulator.requests if r["path"].startswith("/api/") and r["path"] not in FREE_READS]


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "BMP", "TIFF"])
async def test_other_image_formats_are_converted_to_jpeg(engine, courier, simulator, fmt):
    answer = await engine.accept(effect_request(image=image_bytes(640, 480, fmt)))
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    token = simulator.submissions[0]["body"]["image"].split("/media/")[1].split("/")[0]
    sent = Image.open(io.BytesIO(simulator.uploads[token][0]))
    assert (sent.format, sent.size) == ("JPEG", (640, 480))


async def test_oversize_image_is_shrunk_below_10_mb(engine, courier, simulator):
    big = image_bytes(2600, 2000, "PNG", noise=True)
    assert len(big) > 10 * 1024 * 1024
    answer = await engine.accept(effect_request(image=big))
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    token = simulator.submissions[0]["body"]["image"].split("/media/")[1].split("/")[0]
    sent = simulator.uploads[token][0]
    assert len(sent) <= 10 * 1024 * 1024
    assert min(Image.open(io.BytesIO(sent)).size) >= 300


async def test_rotated_phone_photo_is_sent_upright(engine, courier, simulator):
    # EXIF orientation 6: stored landscape, shown portrait
    answer = await engine.accept(effect_request(image=image_bytes(640, 480, exif_orientation=6)))
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    token = simulator.submissions[0]["body"]["image"].split("/media/")[1].split("/")[0]
    assert Image.open(io.BytesIO(simulator.uploads[token][0])).size == (480, 640)


@pytest.mark.parametrize("fmt, codec, mime", [
    ("wav", "pcm_s16le", "audio/wav"),
    ("mp3", "libmp3lame", "audio/mpeg"),
    ("ogg", "libopus", "audio/ogg"),  # a Telegram voice note
    ("ipod", "aac", "audio/mp4"),  # .m4a
])
async def test_accepted_audio_formats(engine, courier, simulator, fmt, codec, mime):
    rate = 48000 if codec == "libopus" else 22050
    request = GenerationRequest(user(), "avatar", image_bytes(), audio=audio_bytes(2.5, fmt, codec, rate))
    answer = await engine.accept(request)
    assert hasattr(answer, "job"), answer.text
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    token = simulator.submissions[0]["body"]["audio"].split("/media/")[1].split("/")[0]
    assert simulator.uploads[token][1] == mime
