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
        raise MediaError(
            f"The {label} is {width}×{height} px; Kling needs at least "
            f"{rule.min_side}×{rule.min_side} px. Send a larger {label}."
        )
    if rule.aspect:
        low, high = rule.aspect
        ratio = width / height
        if not low <= ratio <= high:
            raise MediaError(
                f"The {label} is {_ratio_text(ratio)}; this model needs a shape between "
                f"1:2.5 and 2.5:1. Crop it, or choose another model."
            )
    if (source_format in _SENDABLE_IMAGE_FORMATS and len(data) <= rule.max_bytes
            and not _has_rotation(image)):
        mime = _SENDABLE_IMAGE_FORMATS[source_format]
        return Media(data, mime, f"{label}.{'jpg' if source_format == 'JPEG' else 'png'}",
                     width, height)
    return _reencode(oriented, rule, label)


def _check_input_size(data: bytes, max_input_bytes: int, label: str) -> None:
    if not data:
        raise MediaError(f"The {label} is empty.")
    if len(data) > max_input_bytes:
        raise MediaError(
            f"The {label} is {_mb(len(data))}; the bot accepts files up to {_mb(max_input_bytes)}."
        )


def _decode_image(data: bytes, label: str) -> tuple[Image.Image, str]:
    unreadable = MediaError(
        f"The {label} could not be read: it is damaged or not an image. "
        "Send a JPEG, PNG, WebP, GIF or BMP photo."
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_READABLE_IMAGE_FORMATS)
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise MediaError(
                    f"The {label} is {image.width}×{image.height} px, too many pixels "
                    "to process. Send a smaller one."
                )
            source_format = image.format or ""
            image.load()  # full decode: truncated data fails here, not later
    except MediaError:
        raise
    except UnidentifiedImageError:
        raise unreadable from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(f"The {label} has too many pixels to process. Send a smaller one.") from None
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
            raise MediaError(f"The {label} cannot be made small enough for Kling. Send a smaller one.")
        image = image.resize((width, height), Image.Resampling.LANCZOS)


def prepare_audio(data: bytes, *, max_seconds: float, max_input_bytes: int) -> Media:
    """Validate an audio clip (mp3, wav, ogg/opus, m4a) and measure its length."""
    _check_input_size(data, max_input_bytes, "audio")
    unreadable = MediaError("The audio could not be read. Send an MP3, WAV, OGG/Opus or M4A clip.")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            kind = _AUDIO_CONTAINERS.get(container.format.name)
            if kind is None:
                raise unreadable
            if container.streams.video:
                raise MediaError("That file has video in it. Send the sound alone (MP3, WAV, OGG or M4A).")
            if not container.streams.audio:
                raise MediaError("That file has no sound in it.")
            seconds = _audio_seconds(container)
    except MediaError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError):
        raise unreadable from None
    if seconds < MIN_AUDIO_SECONDS:
        raise MediaError("The audio is too short; send at least a second of speech.")
    if seconds > max_seconds:
        raise MediaError(f"The audio is {seconds:.0f} s long; the limit is {max_seconds:.0f} s.")
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


def _ratio_text(ratio: float) -> str:
    return f"{ratio:.1f}:1 (wide)" if ratio >= 1 else f"1:{1 / ratio:.1f} (tall)"


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
