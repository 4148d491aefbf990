"""A video too large for a chat is re-encoded under the limit and still plays: every
frame, the same length, H.264 in an MP4 whose index comes first, its sound kept.

The sources are clips of noise (bot/devtools/clips.py), which compress as badly as
anything can; what comes out is checked by decoding all of it with PyAV.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from bot.devtools.clips import noisy_clip
from bot.devtools.simulator import Simulator
from bot.videofit import fit_video
from tests.helpers import audio_bytes, image_bytes

MIB = 1024 * 1024
DISCORD_LIMIT = 10 * MIB


@dataclass(frozen=True)
class Played:
    """What a player gets out of a file."""

    codec: str
    pix_fmt: str
    width: int
    height: int
    frames: int
    seconds: float
    audio_codec: str | None
    audio_seconds: float | None  # None: no sound track
    boxes: list[str]  # the MP4's top-level boxes, in order


def play(path: Path) -> Played:
    """Decode every frame and audio sample of ``path``."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames, end, samples = 0, 0.0, 0
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                frames += 1
                end = max(end, float((frame.pts or 0) * frame.time_base) + float(1 / video.average_rate))
            else:
                samples += frame.samples
        return Played(video.codec_context.name, video.codec_context.pix_fmt, video.width, video.height,
                      frames, end, audio.codec_context.name if audio else None,
                      samples / audio.rate if audio else None, top_boxes(path.read_bytes()))


def audio_packets(path: Path) -> list[bytes]:
    """The coded sound, packet by packet, as it is stored."""
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]


def top_boxes(data: bytes) -> list[str]:
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8].decode("latin-1")
        if size == 1:  # a 64-bit size follows the type
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        boxes.append(kind)
        pos += size or len(data)
    return boxes


def clip_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory) -> Path:
    """A 5 s 720p clip with sound, about 14 MB: too large for a 10 MiB Discord channel."""
    return clip_file(tmp_path_factory.mktemp("clips"), "big.mp4", noisy_clip(14_000_000, seconds=5, audio=True))


def test_a_14_mb_clip_fits_a_10_mib_channel_and_plays_whole(big_clip, tmp_path):
    source = play(big_clip)
    assert big_clip.stat().st_size > 13 * MIB and source.audio_seconds

    out = tmp_path / "fitted.mp4"
    assert fit_video(big_clip, DISCORD_LIMIT, out)

    assert out.stat().st_size < DISCORD_LIMIT
    fitted = play(out)
    assert (fitted.codec, fitted.pix_fmt, fitted.audio_codec) == ("h264", "yuv420p", "aac")
    assert fitted.width % 2 == 0 and fitted.height % 2 == 0
    assert fitted.width / fitted.height == pytest.approx(source.width / source.height, rel=0.01)
    assert fitted.frames == source.frames
    assert fitted.seconds == pytest.approx(source.seconds, rel=0.1)
    assert fitted.audio_seconds == pytest.approx(source.audio_seconds, rel=0.1)
    assert fitted.boxes.index("moov") < fitted.boxes.index("mdat")  # plays while it downloads
    assert not list(tmp_path.glob("*.part"))


def test_a_silent_clip_stays_silent_and_sound_can_be_dropped(tmp_path):
    silent = clip_file(tmp_path, "silent.mp4", noisy_clip(2_000_000, seconds=2, width=640, height=360))
    voiced = clip_file(tmp_path, "voiced.mp4", noisy_clip(2_000_000, seconds=2, width=640, height=360, audio=True))

    assert fit_video(silent, MIB, tmp_path / "silent_fit.mp4")
    assert fit_video(voiced, MIB, tmp_path / "voiced_fit.mp4", keep_audio=False)

    for name in ("silent_fit.mp4", "voiced_fit.mp4"):
        fitted = play(tmp_path / name)
        assert (tmp_path / name).stat().st_size < MIB
        assert fitted.audio_seconds is None
        assert fitted.frames == 48 and fitted.seconds == pytest.approx(2.0, rel=0.1)


@pytest.fixture(scope="module")
def full_hd_clip(tmp_path_factory) -> Path:
    """1 s of 1080p24 noise with sound, about 2.5 MB."""
    return clip_file(tmp_path_factory.mktemp("clips"), "full_hd.mp4",
                     noisy_clip(2_500_000, seconds=1, width=1920, height=1080, audio=True))


@pytest.mark.parametrize(("limit", "size"), [
    pytest.param(1_200_000, (1920, 1080), id="0.17 bits a pixel: 1080p kept"),
    pytest.param(450_000, (1280, 720), id="0.065 bits a pixel at 1080p: 720p instead"),
])
def test_a_1080p_clip_goes_out_at_720p_only_when_its_bits_are_too_few_for_1080p(full_hd_clip, tmp_path,
                                                                                  limit, size):
    out = tmp_path / "fitted.mp4"
    assert fit_video(full_hd_clip, limit, out)

    fitted = play(out)
    assert out.stat().st_size < limit
    assert (fitted.width, fitted.height) == size
    assert (fitted.codec, fitted.pix_fmt, fitted.audio_codec) == ("h264", "yuv420p", "aac")
    assert fitted.frames == 24 and fitted.seconds == pytest.approx(1.0, rel=0.1)
    assert fitted.audio_seconds == pytest.approx(1.0, rel=0.1)
    assert fitted.boxes.index("moov") < fitted.boxes.index("mdat")


def with_sound(folder: Path, name: str, codec: str, bit_rate: int) -> Path:
    """A 2 s 640x360 clip of noise whose sound (a tone) is ``codec`` at ``bit_rate``, in an MP4."""
    silent = clip_file(folder, f"{name}.silent.mp4", noisy_clip(2_000_000, seconds=2, width=640, height=360))
    path = folder / name
    with av.open(str(silent)) as inp, av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream_from_template(inp.streams.video[0])
        sound = out.add_stream(codec, rate=48_000, bit_rate=bit_rate)
        sound.layout = "stereo"
        for packet in inp.demux(video=0):
            if packet.dts is not None:
                packet.stream = video
                out.mux(packet)
        tone = av.AudioFrame.from_ndarray(
            (0.3 * np.sin(np.linspace(0, 2 * np.pi * 440 * 2, 96_000, dtype=np.float32)))[None].repeat(2, 0),
            format="fltp", layout="stereo")
        tone.rate = 48_000
        out.mux(sound.encode(tone))
        out.mux(sound.encode())
    return path


def test_an_aac_track_goes_out_untouched_and_other_sound_becomes_aac(tmp_path):
    aac = with_sound(tmp_path, "aac.mp4", "aac", 128_000)
    loud_aac = with_sound(tmp_path, "loud_aac.mp4", "aac", 320_000)
    mp3 = with_sound(tmp_path, "mp3.mp4", "libmp3lame", 128_000)

    for source in (aac, loud_aac, mp3):
        assert fit_video(source, MIB, tmp_path / f"fit_{source.name}")
        fitted = play(tmp_path / f"fit_{source.name}")
        assert (tmp_path / f"fit_{source.name}").stat().st_size < MIB
        assert (fitted.codec, fitted.pix_fmt, fitted.audio_codec) == ("h264", "yuv420p", "aac")
        assert fitted.frames == 48 and fitted.audio_seconds == pytest.approx(2.0, rel=0.1)

    # The usual AAC track is the source's own sound, with no second generation of loss;
    # a 320 kbit/s one would take a share of the picture's bits, so it is encoded again.
    assert audio_packets(tmp_path / "fit_aac.mp4") == audio_packets(aac)
    assert audio_packets(tmp_path / "fit_loud_aac.mp4") != audio_packets(loud_aac)
    with av.open(str(tmp_path / "fit_loud_aac.mp4")) as fitted_loud:
        assert fitted_loud.streams.audio[0].bit_rate < 150_000


def test_a_limit_that_cannot_be_met_leaves_no_file(big_clip, tmp_path):
    out = tmp_path / "fitted.mp4"
    out.write_bytes(b"an older file of that name")

    assert not fit_video(big_clip, 40_000, out)  # 40 kB for 5 s: not even the sound fits

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("data", [
    pytest.param(os.urandom(200_000), id="random bytes"),
    pytest.param(b"", id="empty"),
    pytest.param(noisy_clip(500_000, seconds=1, width=320, height=240)[:250_000], id="cut in half"),
])
def test_an_unreadable_source_is_refused_without_raising(data, tmp_path):
    source = clip_file(tmp_path, "in.mp4", data)

    assert not fit_video(source, MIB, tmp_path / "out.mp4")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_missing_source_is_refused_without_raising(tmp_path):
    assert not fit_video(tmp_path / "gone.mp4", MIB, tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []


async def test_the_simulator_serves_a_clip_of_the_size_asked_with_sound_for_avatars(tmp_path):
    sim = Simulator(job_seconds=0, video_seconds=2, video_bytes=4_000_000)
    await sim.start()
    photo = "data:image/jpeg;base64," + base64.b64encode(image_bytes()).decode()
    voice = "data:audio/wav;base64," + base64.b64encode(audio_bytes()).decode()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer any"}) as http:
            async def output(model: str, inputs: dict) -> Path:
                async with http.post(f"{sim.base_url}/api/v3/{model}", json=inputs) as resp:
                    task = (await resp.json())["data"]
                async with http.get(f"{sim.base_url}/outputs/{task['id']}.mp4") as resp:
                    return clip_file(tmp_path, f"{task['id']}.mp4", await resp.read())

            avatar = await output("kwaivgi/kling-v1-ai-avatar-standard", {"image": photo, "audio": voice})
            sim.video_bytes = 1_000_000
            effect = await output("kwaivgi/kling-effects", {"image": photo, "effect_scene": "squish"})
    finally:
        await sim.close()

    assert 3_600_000 < avatar.stat().st_size < 4_400_000
    assert 900_000 < effect.stat().st_size < 1_100_000
    with av.open(str(avatar)) as with_sound, av.open(str(effect)) as without:
        assert [s.type for s in with_sound.streams] == ["video", "audio"]
        assert with_sound.duration / av.time_base == pytest.approx(2.0, rel=0.1)
        assert [s.type for s in without.streams] == ["video"]
