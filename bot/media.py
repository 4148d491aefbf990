"""Checks and normalises user media before any credit is spent.

Input bytes are untrusted: images are opened with a restricted set of decoders, a
pixel-count ceiling (decompression bombs) and a full decode (truncated files). Audio
is probed with PyAV. Every refusal is a MediaError whose text is shown to the user.
"""

from __future__ import annotations

import io
import warnings
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

# PyAV container names -> (mime type, file extension) for audio the avatar model takes.
_AUDIO_CONTAINERS = {
    "mp3": ("audio/mpeg", "mp3"),
    "wav": ("audio/wav", "wav"),
    "ogg": ("audio/ogg", "ogg"),  # Telegram voice notes: Opus in Ogg
    "mov,mp4,m4a,3gp,3g2,mj2": ("audio/mp4", "m4a"),
}
MIN_AUDIO_SECONDS = 0.5


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
    image, source_format = _decode_image(data, label)
    oriented = ImageOps.exif_transpose(image)
    width, height = oriented.size
    if min(width, height) < rule.min_side:
        raise MediaError(messages.image_too_small(label, width, height, rule.min_side))
    if rule.aspect:
        low, high = rule.aspect
        ratio = width / height
        if not low <= ratio <= high:
            raise MediaError(messages.image_bad_shape(label, ratio))
    if (source_format in _SENDABLE_IMAGE_FORMATS and len(data) <= rule.max_bytes
            and not _has_rotation(image)):
        mime = _SENDABLE_IMAGE_FORMATS[source_format]
        return Media(data, mime, f"{label}.{'jpg' if source_format == 'JPEG' else 'png'}",
                     width, height)
    return _reencode(oriented, rule, label)


def _check_input_size(data: bytes, max_input_bytes: int, label: str) -> None:
    if not data:
        raise MediaError(messages.media_empty(label))
    if len(data) > max_input_bytes:
        raise MediaError(messages.media_too_large(label, len(data), max_input_bytes))


def _decode_image(data: bytes, label: str) -> tuple[Image.Image, str]:
    unreadable = MediaError(messages.image_unreadable(label))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_READABLE_IMAGE_FORMATS)
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise MediaError(messages.image_too_many_pixels(label, image.width, image.height))
            source_format = image.format or ""
            image.load()  # full decode: truncated data fails here, not later
    except MediaError:
        raise
    except UnidentifiedImageError:
        raise unreadable from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(messages.image_too_many_pixels(label)) from None
    except Exception:  # any decoder error on untrusted bytes means "unreadable"
        raise unreadable from None
    return image, source_format


def _has_rotation(image: Image.Image) -> bool:
    return image.getexif().get(0x0112, 1) not in (1, None)


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
            if container.streams.video:
                raise MediaError(messages.AUDIO_HAS_VIDEO)
            if not container.streams.audio:
                raise MediaError(messages.AUDIO_SILENT)
            seconds = _audio_seconds(container)
    except MediaError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError):
        raise unreadable from None
    if seconds < MIN_AUDIO_SECONDS:
        raise MediaError(messages.AUDIO_TOO_SHORT)
    if seconds > max_seconds:
        raise MediaError(messages.audio_too_long(seconds, max_seconds))
    mime, ext = kind
    return Media(data, mime, f"audio.{ext}", seconds=round(seconds, 2))


def _audio_seconds(container: av.container.InputContainer) -> float:
    if container.duration:
        return container.duration / av.time_base
    stream = container.streams.audio[0]
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    # No header says how long it is: decode and count samples.
    samples = sum(frame.samples for frame in container.decode(stream))
    return samples / (stream.rate or 1)

