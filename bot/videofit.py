"""Re-encode a video that is too large for a chat's upload limit so that it fits (PyAV).

The bitrate comes from the limit and the duration; encoders overshoot on hard content,
so each result is measured and, when over, encoded again with less (and later at a
smaller size). The output is H.264/yuv420p with AAC audio in an MP4 whose index comes
first (faststart), so chat apps can play it while it downloads.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import av

log = logging.getLogger(__name__)

ATTEMPTS = 4
SHRINK_FROM = 2  # attempts from this one on also shrink the picture ...
SHRINK = 0.75  # ... by this much per side each time
FILL = 0.93  # the share of the limit the first attempt aims at: MP4 overhead, overshoot
OVERHEAD_BYTES = 16_000  # MP4 header and index, roughly, for clips of a few hundred frames
MIN_VIDEO_BPS = 64_000  # below this a picture is no longer worth sending
_AAC_RATES = (96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000)


@dataclass(frozen=True)
class _Source:
    seconds: float
    width: int
    height: int
    audio: bool


def fit_video(source: Path, limit_bytes: int, dest: Path, *, keep_audio: bool = True) -> bool:
    """Write ``source`` re-encoded to ``dest`` strictly under ``limit_bytes``; False (and no
    ``dest``) when it cannot fit or cannot be read. Blocking: run it in a thread."""
    part = dest.with_name(dest.name + ".part")
    try:
        info = _probe(source)
        audio_bps = _audio_bps(limit_bytes, info.seconds) if info.audio and keep_audio else 0
        video_bps = ((limit_bytes * FILL - OVERHEAD_BYTES) * 8 / info.seconds) - audio_bps
        for attempt in range(ATTEMPTS):
            if video_bps < MIN_VIDEO_BPS:
                break
            scale = SHRINK ** max(0, attempt - SHRINK_FROM + 1)
            size = _even(info.width * scale), _even(info.height * scale)
            _encode(source, part, size, int(video_bps), audio_bps)
            written = part.stat().st_size
            log.info("fit %s: attempt %d at %dx%d, %d kbit/s -> %d bytes (limit %d)",
                     source.name, attempt + 1, *size, video_bps // 1000, written, limit_bytes)
            if written < limit_bytes:
                part.replace(dest)
                return True
            # Scale the bitrate by how far over it was, and more: part of the excess does not scale.
            video_bps = (video_bps + audio_bps) * limit_bytes / written * 0.85 - audio_bps
        log.warning("cannot fit %s under %d bytes", source.name, limit_bytes)
    except Exception as err:  # untrusted media: any decoder or encoder failure means "cannot fit"
        log.warning("cannot re-encode %s: %s", source.name, err)
    part.unlink(missing_ok=True)
    dest.unlink(missing_ok=True)
    return False


def _probe(source: Path) -> _Source:
    with av.open(str(source)) as container:
        video = _video_stream(container)
        seconds = _seconds(container, video)
        return _Source(seconds, video.width, video.height, bool(container.streams.audio))


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first real video stream (not an attached cover picture)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise ValueError("no video stream")


def _seconds(container: av.container.InputContainer, video: av.video.stream.VideoStream) -> float:
    if video.duration and video.time_base:
        seconds = float(video.duration * video.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    elif video.frames and video.average_rate:
        seconds = float(video.frames / video.average_rate)
    else:
        raise ValueError("unknown duration")
    if not 0 < seconds < math.inf:
        raise ValueError(f"odd duration {seconds}")
    return seconds


def _audio_bps(limit_bytes: int, seconds: float) -> int:
    """96 kbit/s for speech and music; 64 when the whole budget is tight (under 1 Mbit/s)."""
    return 96_000 if limit_bytes * 8 / seconds > 1_000_000 else 64_000


def _even(length: float) -> int:
    return max(2, round(length / 2) * 2)  # yuv420p needs even sides


def _encode(source: Path, dest: Path, size: tuple[int, int], video_bps: int, audio_bps: int) -> None:
    """One encode of ``source`` into ``dest``: same timestamps, new size and bitrates."""
    with av.open(str(source)) as inp, av.open(str(dest), "w", format="mp4",
                                              options={"movflags": "+faststart"}) as out:
        in_video = _video_stream(inp)
        video = out.add_stream("libx264", rate=in_video.average_rate or 24, time_base=in_video.time_base)
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        video.bit_rate = video_bps
        # Capped at the average with half a second of buffer: plain ABR overshoots by 10-50 %
        # on short, hard clips (the first frames take what the rest cannot give back).
        video.options = {"preset": "veryfast", "maxrate": str(video_bps), "bufsize": str(video_bps // 2)}
        video.codec_context.thread_count = 0  # auto
        in_audio = inp.streams.audio[0] if audio_bps and inp.streams.audio else None
        audio = _add_audio(out, in_audio, audio_bps) if in_audio else None
        last_pts: int | None = None
        for packet in inp.demux([in_video, in_audio] if in_audio else [in_video]):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    last_pts = _fix_pts(frame, last_pts)
                    out.mux(video.encode(frame))
                elif isinstance(frame, av.AudioFrame) and audio is not None:
                    out.mux(audio.encode(frame))
        out.mux(video.encode())
        if audio is not None:
            out.mux(audio.encode())


def _add_audio(out: av.container.OutputContainer, source: av.audio.stream.AudioStream,
               bps: int) -> av.audio.stream.AudioStream:
    """An AAC track like ``source``; the encoder resamples, and AAC takes only certain rates."""
    audio = out.add_stream("aac", rate=source.rate if source.rate in _AAC_RATES else 48_000, bit_rate=bps)
    audio.layout = "mono" if source.channels == 1 else "stereo"
    return audio


def _fix_pts(frame: av.VideoFrame, last: int | None) -> int:
    """x264 refuses frames without timestamps or out of order: give them the next tick."""
    if frame.pts is None or (last is not None and frame.pts <= last):
        frame.pts = 0 if last is None else last + 1
    return int(frame.pts)
