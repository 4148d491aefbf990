"""One Kling model as the bot knows it, and one request's options as a user gave them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

PROMPT_MAX_CHARS = 2500
GUIDANCE_MIN, GUIDANCE_MAX, GUIDANCE_DEFAULT = 0.0, 1.0, 0.5

Kind = Literal["effect", "animate", "avatar"]

# The chat's names for the options whose API field differs between models; each maps to
# the first of its candidates a model's schema has (``Model.field``).
OPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt",),
    "negative_prompt": ("negative_prompt",),
    "guidance": ("guidance_scale", "cfg_scale"),
    "duration": ("duration",),
    "end_image": ("end_image", "last_image", "tail_image"),
    "sound": ("sound", "enable_audio", "generate_audio"),
    "aspect": ("aspect_ratio",),
    "effect": ("effect_scene",),
    "audio": ("audio",),
}


class ValidationError(ValueError):
    """A request the bot refuses before spending anything; str() is user-facing."""


@dataclass(frozen=True)
class ImageRule:
    """What WaveSpeed accepts for one image input of a model."""

    min_side: int = 300
    max_bytes: int = 10 * 1024 * 1024
    # width / height bounds, or None when the model page sets none
    aspect: tuple[float, float] | None = None


@dataclass(frozen=True)
class Model:
    """A model users may ask for: its API id and fields, its limits, its names."""

    key: str  # short name users type and config uses
    id: str  # WaveSpeed model id, the submit path
    kind: Kind
    title: str
    aliases: tuple[str, ...]
    inputs: tuple[str, ...]  # every API field the model takes
    required: frozenset[str]
    durations: tuple[int, ...]  # selectable clip lengths; () = fixed or audio-driven
    image: ImageRule = ImageRule()
    expected_seconds: int = 120  # first guess of run time, refined from history
    cost: int = 1  # credits per started 5 s when no quote is known ([costs] overrides it)
    schema: Mapping[str, Any] | None = None  # the request JSON Schema, as WaveSpeed describes it
    aspects: tuple[str, ...] = ()  # aspect ratios it can be asked for
    base_usd: Decimal | None = None  # WaveSpeed's price of the default inputs
    features: tuple[str, ...] = ()  # what it adds, as /models lists it
    fields: Mapping[str, str] = field(default_factory=dict)  # chat option -> this model's API field
    nicknames: tuple[str, ...] = ()  # family and operator names among the aliases, as /models shows them

    @property
    def default_duration(self) -> int:
        fields = (self.schema or {}).get("properties")
        spec = fields.get("duration") if isinstance(fields, Mapping) else None
        default = spec.get("default") if isinstance(spec, Mapping) else None
        text = str(default) if isinstance(default, int | str) and not isinstance(default, bool) else ""
        if text.isascii() and text.isdigit() and int(text) in self.durations:  # "³".isdigit() is true
            return int(text)
        return self.durations[0] if self.durations else 5

    def field(self, option: str) -> str | None:
        """This model's API field for a chat option (``guidance`` -> ``cfg_scale``), or None."""
        if option in self.fields:
            return self.fields[option]
        return next((name for name in OPTION_FIELDS.get(option, (option,)) if name in self.inputs), None)

    def takes(self, option: str) -> bool:
        """Whether the model takes a chat option (or an API field of that name)."""
        return self.field(option) is not None


@dataclass(frozen=True)
class Params:
    """The non-media inputs of one request, as the user gave them."""

    effect: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    guidance: float | None = None
    duration: int | None = None
    has_end_image: bool = False
    has_audio: bool = False
    sound: bool | None = None
    aspect: str | None = None
