"""Re-encode a video that is too large for a chat's upload limit so that it fits (PyAV).

The bitrate comes from the limit and the duration; when that is too little for the
picture's size, the picture is made smaller first (1080p -> 720p ...). Encoders overshoot
on hard content, so each result is measured and, when over, encoded again with less
(and later at a smaller size). The output is H.264/yuv420p with AAC audio (the source's
own AAC track copied when it is small enough) in an MP4 whose index comes first
(faststart), so chat apps can play it while it downloads.
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
# Below this many bits per pixel and frame a fast H.264 encode of a 1080p picture turns
# blocky, and the same bits look better on a smaller one (10 MiB for 10 s of 1080p24 is
# about 0.15; for 20 s, 0.07: that goes out at 720p).
MIN_BITS_PER_PIXEL = 0.1
SMALLER_SHORT_SIDES = (720, 540, 360)  # the sizes a picture steps down to, by its short side
# x264's "superfast" with a 10-frame rate lookahead: on a 10 s 1080p clip at 7.5 Mbit/s it
# takes about 70 % of "veryfast"'s CPU for 0.8 dB less PSNR, where plain "superfast" (no
# lookahead) misses the bitrate by 10 % and loses 1.6 dB, and "ultrafast" (no CABAC, no
# deblocking) 2.5 dB. The tunes "fastdecode" and "zerolatency" cost quality and save less.
PRESET = "superfast"
RATE_LOOKAHEAD_FRAMES = 10
COPY_AUDIO_UP_TO = 1.5  # an AAC track goes out as it is up to 1.5x the rate a new one would get
_AAC_RATES = (96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000)


@dataclass(frozen=True)
class _Source:
    seconds: float
    width: int
    height: int
    fps: float
    audio: bool
    copyable_audio_bps: int  # an AAC track's bit rate when it can be copied as it is, else 0


def fit_video(source: Path, limit_bytes: int, dest: Path, *, keep_audio: bool = True) -> bool:
    """Write ``source`` re-encoded to ``dest`` strictly under ``limit_bytes``; False (and no
    ``dest``) when it cannot fit or cannot be read. Blocking: run it in a thread."""
    part = dest.with_name(dest.name + ".part")
    try:
        info = _probe(source)
        audio_bps, copy_audio = 0, False
        if info.audio and keep_audio:
            audio_bps = _audio_bps(limit_bytes, info.seconds)
            if 0 < info.copyable_audio_bps <= audio_bps * COPY_AUDIO_UP_TO:
                audio_bps, copy_audio = info.copyable_audio_bps, True
        video_bps = ((limit_bytes * FILL - OVERHEAD_BYTES) * 8 / info.seconds) - audio_bps
        for attempt in range(ATTEMPTS):
            if video_bps < MIN_VIDEO_BPS:
                break
            scale = _scale_for(info, video_bps) * SHRINK ** max(0, attempt - SHRINK_FROM + 1)
            size = _even(info.width * scale), _even(info.height * scale)
            _encode(source, part, size, int(video_bps), audio_bps, copy_audio=copy_audio)
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
        fps = float(video.average_rate) if video.average_rate else (video.frames or 24 * seconds) / seconds
        audio = container.streams.audio[0] if container.streams.audio else None
        # Only from MP4 to MP4: AAC from other containers (ADTS in MPEG-TS) needs its headers rewritten.
        copyable = (audio is not None and audio.codec_context.name == "aac"
                    and "mp4" in container.format.name.split(","))
        return _Source(seconds, video.width, video.height, fps, audio is not None,
                       int(audio.bit_rate or 0) if copyable and audio is not None else 0)


def _scale_for(info: _Source, video_bps: float) -> float:
    """The picture's scale for ``video_bps``: 1, or the first smaller short side that gets
    at least MIN_BITS_PER_PIXEL (the smallest when none does)."""
    short = min(info.width, info.height)
    scale = 1.0
    for side in (short, *(side for side in SMALLER_SHORT_SIDES if side < short)):
        scale = side / short
        if video_bps / (info.width * info.height * scale ** 2 * info.fps) >= MIN_BITS_PER_PIXEL:
            break
    return scale


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


def _encode(source: Path, dest: Path, size: tuple[int, int], video_bps: int, audio_bps: int, *,
            copy_audio: bool = False) -> None:
    """One encode of ``source`` into ``dest``: same timestamps, new size and bitrates; the
    audio copied as it is with ``copy_audio``."""
    with av.open(str(source)) as inp, av.open(str(dest), "w", format="mp4",
                                              options={"movflags": "+faststart"}) as out:
        in_video = _video_stream(inp)
        in_video.thread_type = "AUTO"  # decode several frames at once, not only slices of one
        video = out.add_stream("libx264", rate=in_video.average_rate or 24, time_base=in_video.time_base)
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        video.bit_rate = video_bps
        # Capped at the average with half a second of buffer: plain ABR overshoots by 10-50 %
        # on short, hard clips (the first frames take what the rest cannot give back).
        video.options = {"preset": PRESET, "rc-lookahead": str(RATE_LOOKAHEAD_FRAMES),
                         "maxrate": str(video_bps), "bufsize": str(video_bps // 2)}
        # Every core: x264 picks its thread count from the CPUs this process may use. Frame
        # threads, not PyAV's default of slices, which split each frame and parallelise less.
        video.codec_context.thread_count = 0
        video.codec_context.thread_type = "FRAME"
        in_audio = inp.streams.audio[0] if audio_bps and inp.streams.audio else None
        copied = out.add_stream_from_template(in_audio) if in_audio and copy_audio else None
        audio = _add_audio(out, in_audio, audio_bps) if in_audio and not copy_audio else None
        last_pts: int | None = None
        for packet in inp.demux([in_video, in_audio] if in_audio else [in_video]):
            if copied is not None and packet.stream.type == "audio":
                if packet.dts is not None:  # None: the demuxer's empty end-of-stream packet
                    packet.stream = copied
                    out.mux(packet)
                continue
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
