"""Checks and normalises user media before any credit is spent.

Input bytes are untrusted: images are opened with a restricted set of decoders, a
pixel-count ceiling (decompression bombs) and a full decode (truncated files), except
a JPEG sent on as it is, whose pixels the bot never needs: its whole marker structure
is walked instead (truncated files) and libjpeg checks its headers. Audio is probed
with PyAV and measured by its packets as well as its header (which may lie). Every
refusal is a MediaError whose text is shown to the user.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import av
from PIL import Image, ImageOps, UnidentifiedImageError

from bot import messages
from bot.catalog import ImageRule, ValidationError

# Formats Pillow may decode for us: what phones and chat apps send. Anything else
# (HEIC, PSD, SVG, ...) is refused rather than fed to a rarely used decoder.
_READABLE_IMAGE_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]  # JPEG covers MPO
_SENDABLE_IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
MAX_IMAGE_PIXELS = 40_000_000  # 40 MP: above any phone photo, far below a bomb
_TURNED = {2, 3, 4, 5, 6, 7, 8}  # EXIF orientations ImageOps.exif_transpose undoes
_SIDEWAYS = {5, 6, 7, 8}  # ... of which these swap width and height
# A JPEG marker: 0xFF and a code (any 0xFF fill bytes before it are skipped). In coded
# data 0xFF00 is a stuffed data byte, so the only markers found there are RSTn and the
# scan's end. (No "\xff+": without a literal prefix the search runs 20x slower.)
_JPEG_MARKER = re.compile(rb"\xff([^\x00\xff])")
# Segments libjpeg takes after the first scan (DHT, DAC, SOS, DQT, DNL, DRI, APPn, COM);
# any other marker there (a second SOF, an unknown code) makes it give up.
_JPEG_BETWEEN_SCANS = frozenset({0xC4, 0xCC, 0xDA, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)})
_JPEG_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})

# PyAV container names -> (mime type, file extension) for audio the avatar model takes.
_AUDIO_CONTAINERS = {
    "mp3": ("audio/mpeg", "mp3"),
    "wav": ("audio/wav", "wav"),
    "ogg": ("audio/ogg", "ogg"),  # Telegram voice notes: Opus in Ogg
    "mov,mp4,m4a,3gp,3g2,mj2": ("audio/mp4", "m4a"),
}
MIN_AUDIO_SECONDS = 0.5
CODEC_PADDING = 0.3  # seconds of a measured clip that are the encoder's, not the speaker's


class MediaError(ValidationError):
    """A photo or audio clip the bot refuses; str() is user-facing."""


@dataclass(frozen=True)
class Media:
    """Bytes ready to send to WaveSpeed."""

    data: bytes
    mime: str
    filename: str
    width: int = 0
    height: int = 0
    seconds: float = 0.0


def prepare_image(data: bytes, rule: ImageRule, *, max_input_bytes: int,
                  label: str = "photo") -> Media:
    """Validate an image against a model's rule; convert or shrink it when safe."""
    _check_input_size(data, max_input_bytes, label)
    image, source_format, orientation = _open_image(data, label)
    as_is = (source_format in _SENDABLE_IMAGE_FORMATS and len(data) <= rule.max_bytes
             and orientation in (1, None))
    with _untrusted_image(label):
        if as_is and source_format == "JPEG":
            _check_jpeg(data)  # its pixels are not needed: no full decode
        else:
            image.load()  # full decode: truncated data fails here, not later
    width, height = image.size  # the header's size
    if orientation in _SIDEWAYS:
        width, height = height, width
    if min(width, height) < rule.min_side:
        raise MediaError(messages.image_too_small(label, width, height, rule.min_side))
    if rule.aspect:
        low, high = rule.aspect
        ratio = width / height
        if not low <= ratio <= high:
            raise MediaError(messages.image_bad_shape(label, ratio))
    if as_is:
        mime = _SENDABLE_IMAGE_FORMATS[source_format]
        return Media(data, mime, f"{label}.{'jpg' if source_format == 'JPEG' else 'png'}",
                     width, height)
    if orientation in _TURNED:
        image = ImageOps.exif_transpose(image)
    return _reencode(image, rule, label)


def _check_input_size(data: bytes, max_input_bytes: int, label: str) -> None:
    if not data:
        raise MediaError(messages.media_empty(label))
    if len(data) > max_input_bytes:
        raise MediaError(messages.media_too_large(label, len(data), max_input_bytes))


@contextmanager
def _untrusted_image(label: str) -> Iterator[None]:
    """Turn whatever reading untrusted image bytes raises into a user-facing MediaError."""
    unreadable = MediaError(messages.image_unreadable(label))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except MediaError:
        raise
    except UnidentifiedImageError:
        raise unreadable from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(messages.image_too_many_pixels(label)) from None
    except Exception:  # any decoder error on untrusted bytes means "unreadable"
        raise unreadable from None


def _open_image(data: bytes, label: str) -> tuple[Image.Image, str, int | None]:
    """The image with only its header read, its format and its EXIF orientation; a bomb
    is refused here, before any pixel is decoded."""
    with _untrusted_image(label):
        image = Image.open(io.BytesIO(data), formats=_READABLE_IMAGE_FORMATS)
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise MediaError(messages.image_too_many_pixels(label, image.width, image.height))
        orientation = image.getexif().get(0x0112)
    return image, image.format or "", orientation


def _check_jpeg(data: bytes) -> None:
    """Check a JPEG that goes on as it is, without decoding its pixels.

    A full decode costs ~0.1 s of CPU for a 12 MP photo, and even a draft decode (DCT
    scaling) still Huffman-decodes every coded byte. Instead: walk every segment to the
    end-of-image marker (a truncated file has none), and let libjpeg decode the headers
    with the first scan's coded data left out, at 1/8 scale (tables, sampling factors
    and scan parameters it cannot use fail here).
    """
    scan = _jpeg_first_scan(data)
    probe = Image.open(io.BytesIO(data[:scan] + b"\xff\xd9"), formats=["JPEG"])
    probe.draft(None, (1, 1))  # the smallest DCT scale, 1/8; this changes probe.size
    probe.load()


def _jpeg_first_scan(data: bytes) -> int:
    """Where the first scan's coded data starts, once every segment is seen to fit and an
    end-of-image marker to follow the coded data; OSError when the file is cut short or a
    marker libjpeg would give up on turns up."""
    pos, scan = 2, 0  # after the start-of-image marker Image.open has checked
    components, more_scans = 0, False
    while (marker := _JPEG_MARKER.search(data, pos)) is not None:
        code, pos = marker[1][0], marker.end()
        if code == 0xD9:  # end of image
            if scan:
                return scan
            break
        if 0xD0 <= code <= 0xD7 or code == 0x01:  # RSTn and TEM have no length
            continue
        # Markers before the first scan are libjpeg's to judge (the probe in _check_jpeg);
        # a second SOI, or a marker libjpeg gives up on after a scan, is refused here.
        if code == 0xD8 or (scan and code not in _JPEG_BETWEEN_SCANS):
            break
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2 or pos + length > len(data):
            break
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):  # start of frame
            components, more_scans = data[pos + 7], code in _JPEG_PROGRESSIVE_SOF
        elif code == 0xDA:  # start of scan: coded data follows its header
            if scan and not more_scans:
                break  # libjpeg expects the end of image after a scan of all components
            if not scan:
                scan, more_scans = pos + length, more_scans or data[pos + 2] < components
        pos += length
    raise OSError("the JPEG is cut short or its structure is broken")


def _reencode(image: Image.Image, rule: ImageRule, label: str) -> Media:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        image, fmt, mime, ext = image.convert("RGBA"), "PNG", "image/png", "png"
    else:
        image, fmt, mime, ext = image.convert("RGB"), "JPEG", "image/jpeg", "jpg"
    while True:
        out = io.BytesIO()
        image.save(out, fmt, **({"quality": 90, "optimize": True} if fmt == "JPEG" else {"optimize": True}))
        encoded = out.getvalue()
        if len(encoded) <= rule.max_bytes:
            return Media(encoded, mime, f"{label}.{ext}", image.width, image.height)
        # Shrink by the byte ratio (bytes scale with area), a little extra to converge.
        scale = (rule.max_bytes / len(encoded)) ** 0.5 * 0.9
        width, height = int(image.width * scale), int(image.height * scale)
        if min(width, height) < rule.min_side:
            raise MediaError(messages.image_cannot_shrink(label))
        image = image.resize((width, height), Image.Resampling.LANCZOS)


def prepare_audio(data: bytes, *, max_seconds: float, max_input_bytes: int) -> Media:
    """Validate an audio clip (mp3, wav, ogg/opus, m4a) and measure its length."""
    _check_input_size(data, max_input_bytes, "audio")
    unreadable = MediaError(messages.AUDIO_UNREADABLE)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            kind = _AUDIO_CONTAINERS.get(container.format.name)
            if kind is None:
                raise unreadable
            if any(not _is_cover_art(stream) for stream in container.streams.video):
                raise MediaError(messages.AUDIO_HAS_VIDEO)
            if not container.streams.audio:
                raise MediaError(messages.AUDIO_SILENT)
            seconds, whole = _audio_seconds(container, max_seconds + CODEC_PADDING)
    except MediaError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError):
        raise unreadable from None
    if seconds < MIN_AUDIO_SECONDS:
        raise MediaError(messages.AUDIO_TOO_SHORT)
    if billable_seconds(seconds) > max_seconds:  # how much longer is unknown when not read whole
        raise MediaError(messages.audio_too_long(seconds, max_seconds) if whole
                         else messages.audio_over_limit(max_seconds))
    mime, ext = kind
    return Media(data, mime, f"audio.{ext}", seconds=round(seconds, 2))


def billable_seconds(measured: float) -> float:
    """An audio clip's length as limits and prices count it: encoders pad a clip (Opus's
    pre-skip, MP3 frames), so a 15 s voice note measures 15.03 s and must not cost, or be
    refused, as a 16 s one."""
    return max(0.0, measured - CODEC_PADDING)


def _is_cover_art(stream: av.video.stream.VideoStream) -> bool:
    """An MP3's or M4A's attached picture (album art) is a still image, not video."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _audio_seconds(container: av.container.InputContainer, limit: float) -> tuple[float, bool]:
    """How long a clip lasts, and whether that is its whole length: the longest of what its
    container declares, what its packets' times span and what they decode to. Every one
    of a container's times can lie (an MP3's Xing frame count; an M4A's durations and its
    table of packet times, all scaled down) while WaveSpeed plays every decoded sample, so
    the packets are decoded, but only until they pass ``limit`` (then the length is "more
    than that"): a few milliseconds, however large the file."""
    stream = container.streams.audio[0]
    declared = 0.0
    if container.duration:
        declared = container.duration / av.time_base
    elif stream.duration and stream.time_base:
        declared = float(stream.duration * stream.time_base)
    if declared > limit:
        return declared, True
    measured = _measured_seconds(container, stream, limit)
    return max(declared, measured), measured <= limit


def _measured_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                      limit: float) -> float:
    """The longest of the packets' summed durations, their timestamps' span and the samples
    they decode to, in seconds, read until past ``limit``. A packet that does not decode
    is skipped, as a player skips it."""
    base = float(stream.time_base or 0)
    rate = stream.rate or 1
    total, start, end, samples = 0, None, None, 0
    packets = container.demux(stream)
    seconds = 0.0
    for packet in packets:
        if packet.size:  # not the demuxer's end-of-stream marker
            length = packet.duration or 0
            total += length
            if packet.pts is not None:
                start = packet.pts if start is None else min(start, packet.pts)
                end = packet.pts + length if end is None else max(end, packet.pts + length)
        samples += _decoded_samples(stream, packet if packet.size else None)
        span = end - start if start is not None and end is not None else 0
        seconds = max(max(total, span) * base, samples / rate)
        if seconds > limit:
            break
    return seconds


def _decoded_samples(stream: av.audio.stream.AudioStream, packet: av.Packet | None) -> int:
    """The samples one packet decodes to (None: the decoder's last, delayed frames)."""
    try:
        return sum(frame.samples for frame in stream.codec_context.decode(packet))
    except av.error.FFmpegError:
        return 0
