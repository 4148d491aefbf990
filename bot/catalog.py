"""The Kling models served by WaveSpeed, as data: inputs, limits, names users type.

Everything here comes from the model pages in ``shared/wavespeed/``. Code paths
elsewhere read these tables instead of special-casing model ids.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

PROMPT_MAX_CHARS = 2500
GUIDANCE_MIN, GUIDANCE_MAX, GUIDANCE_DEFAULT = 0.0, 1.0, 0.5

Kind = Literal["effect", "animate", "avatar"]

# The 77 scenes exactly as the API spells them, misspellings included
# ("boylfriend", "offic_escape_plow"): the API rejects any other spelling.
EFFECTS: tuple[str, ...] = (
    "emoji", "let's_ride", "snatched", "magic_broom", "felt_felt", "jumpdrop",
    "celebration", "splashsplash", "hula", "surfsurf", "fairy_wing", "angel_wing",
    "dark_wing", "skateskate", "plushcut", "jelly_press", "jelly_slice",
    "jelly_squish", "jelly_jiggle", "pixelpixel", "yearbook", "instant_film",
    "anime_figure", "rocketrocket", "bloombloom", "dizzydizzy", "fuzzyfuzzy",
    "squish", "expansion", "santa_gifts", "santa_hug", "girlfriend", "boylfriend",
    "heart_gesture_1", "pet_wizard", "pet_lion", "smoke_smoke", "thumbs_up",
    "pet_chef", "pet_delivery", "instant_kid", "dollar_rain", "cry_cry",
    "building_collapse", "gun_shot", "mushroom", "double_gun", "pet_warrior",
    "lightning_power", "jesus_hug", "magic_fireball", "shark_alert", "long_hair",
    "lie_flat", "polar_bear_hug", "brown_bear_hug", "jazz_jazz", "offic_escape_plow",
    "fly_fly", "watermelon_bomb", "pet_dance", "boss_coming", "wool_curly",
    "iron_warrior", "pet_moto_rider", "pet_bee", "marry_me", "swing_swing",
    "day_to_night", "piggy_morph", "wig_out", "car_explosion", "ski_ski", "tiger_hug",
    "siblings", "construction_worker", "media_interview",
)

# What people naturally type for the API's odd spellings.
EFFECT_ALIASES: dict[str, str] = {
    "lets_ride": "let's_ride",
    "boyfriend": "boylfriend",
    "office_escape_plow": "offic_escape_plow",
    "office_escape": "offic_escape_plow",
    "heart_gesture": "heart_gesture_1",
    "heart": "heart_gesture_1",
}


@dataclass(frozen=True)
class ImageRule:
    """What WaveSpeed accepts for one image input of a model."""

    min_side: int = 300
    max_bytes: int = 10 * 1024 * 1024
    # width / height bounds, or None when the model page sets none
    aspect: tuple[float, float] | None = None


@dataclass(frozen=True)
class Model:
    key: str  # short name users type and config uses
    id: str  # WaveSpeed model id, the submit path
    kind: Kind
    title: str
    aliases: tuple[str, ...]
    inputs: tuple[str, ...]  # every input the API takes
    required: frozenset[str]
    durations: tuple[int, ...]  # selectable clip lengths; () = fixed or audio-driven
    image: ImageRule = ImageRule()
    expected_seconds: int = 120  # first guess of run time, refined from history

    @property
    def default_duration(self) -> int:
        return self.durations[0] if self.durations else 5

    def takes(self, name: str) -> bool:
        return name in self.inputs


_I2V_INPUTS = ("image", "prompt", "negative_prompt", "guidance_scale", "duration")

MODELS: tuple[Model, ...] = (
    Model(
        key="effects", id="kwaivgi/kling-effects", kind="effect", title="Kling Effects",
        aliases=("effect", "kling-effects"),
        inputs=("image", "effect_scene"), required=frozenset({"image", "effect_scene"}),
        durations=(), expected_seconds=90,
    ),
    Model(
        key="avatar", id="kwaivgi/kling-v1-ai-avatar-standard", kind="avatar",
        title="Kling v1 AI Avatar", aliases=("ai-avatar", "kling-v1-ai-avatar-standard"),
        inputs=("image", "audio", "prompt"), required=frozenset({"image", "audio"}),
        durations=(), expected_seconds=180,
    ),
    Model(
        key="v1.6", id="kwaivgi/kling-v1.6-i2v-standard", kind="animate",
        title="Kling v1.6 standard", aliases=("1.6", "v16", "kling-v1.6-i2v-standard"),
        inputs=_I2V_INPUTS, required=frozenset({"image"}), durations=(5, 10),
        expected_seconds=150,
    ),
    Model(
        key="v2.1", id="kwaivgi/kling-v2.1-i2v-standard", kind="animate",
        title="Kling v2.1 standard", aliases=("2.1", "v21", "kling-v2.1-i2v-standard"),
        # The v2.1 page makes the prompt required and the image optional; the bot
        # always sends a photo, so both are required here.
        inputs=_I2V_INPUTS, required=frozenset({"image", "prompt"}), durations=(5, 10),
        expected_seconds=150,
    ),
    Model(
        key="master", id="kwaivgi/kling-v2.0-i2v-master", kind="animate",
        title="Kling v2.0 master", aliases=("v2.0", "2.0", "v2", "kling-v2.0-i2v-master"),
        inputs=("image", "end_image", *_I2V_INPUTS[1:]), required=frozenset({"image"}),
        durations=(5, 10), image=ImageRule(aspect=(1 / 2.5, 2.5)), expected_seconds=240,
    ),
)

DEFAULT_ANIMATE_MODEL = "v2.1"
_BY_NAME: dict[str, Model] = {}
for _m in MODELS:
    for _name in (_m.key, _m.id, *_m.aliases):
        _BY_NAME[_name.lower()] = _m


class ValidationError(ValueError):
    """A request the bot refuses before spending anything; str() is user-facing."""


def model_by_id(model_id: str) -> Model:
    return next(m for m in MODELS if m.id == model_id)


def resolve_model(name: str | None, kind: Kind) -> Model:
    """The model a user named (short name, alias or full id) for a command kind."""
    if not name:
        return {"effect": _BY_NAME["effects"], "avatar": _BY_NAME["avatar"]}.get(
            kind, _BY_NAME[DEFAULT_ANIMATE_MODEL]
        )
    model = _BY_NAME.get(name.strip().lower())
    choices = [m.key for m in MODELS if m.kind == kind]
    if model is None or model.kind != kind:
        raise ValidationError(f"Unknown model '{name}'. Choose one of: {', '.join(choices)}.")
    return model


def _normalise_effect(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


def resolve_effect(name: str) -> str:
    """The API's spelling of an effect a user typed, or a refusal with suggestions."""
    if not name or not name.strip():
        raise ValidationError("Name an effect, e.g. /effect hula. /effects lists them all.")
    wanted = _normalise_effect(name)
    if wanted in EFFECTS:
        return wanted
    if wanted in EFFECT_ALIASES:
        return EFFECT_ALIASES[wanted]
    unquoted = {e.replace("'", ""): e for e in EFFECTS}
    if wanted.replace("'", "") in unquoted:
        return unquoted[wanted.replace("'", "")]
    raise ValidationError(_unknown_effect_message(name.strip(), wanted))


def suggest_effects(name: str, limit: int = 3) -> list[str]:
    """Closest effect names to what a user typed, best first."""
    wanted = _normalise_effect(name)
    pool = list(EFFECTS) + list(EFFECT_ALIASES)
    found = difflib.get_close_matches(wanted, pool, n=limit * 2, cutoff=0.6)
    found += [e for e in EFFECTS if wanted and wanted in e and e not in found]
    names: list[str] = []
    for hit in found:
        real = EFFECT_ALIASES.get(hit, hit)
        if real not in names:
            names.append(real)
    return names[:limit]


def search_effects(query: str, limit: int = 25) -> list[str]:
    """Effects matching a partial name, best matches first (for autocomplete)."""
    wanted = _normalise_effect(query)
    if not wanted:
        return list(EFFECTS[:limit])
    starts = [e for e in EFFECTS if e.startswith(wanted)]
    contains = [e for e in EFFECTS if wanted in e and e not in starts]
    close = [e for e in suggest_effects(query, limit) if e not in starts + contains]
    return (starts + contains + close)[:limit]


def _unknown_effect_message(typed: str, wanted: str) -> str:
    hints = suggest_effects(wanted)
    if len(hints) == 1:
        return f"Unknown effect '{typed}'. Did you mean '{hints[0]}'?"
    if hints:
        return f"Unknown effect '{typed}'. Did you mean one of: {', '.join(hints)}?"
    return f"Unknown effect '{typed}'. /effects lists the {len(EFFECTS)} effects."


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


def check_params(model: Model, params: Params) -> dict[str, object]:
    """Validate params against a model; return the API inputs other than media."""
    inputs: dict[str, object] = {}
    prompt = (params.prompt or "").strip()
    negative = (params.negative_prompt or "").strip()
    if model.kind == "effect":
        inputs["effect_scene"] = resolve_effect(params.effect or "")
    if prompt:
        if not model.takes("prompt"):
            raise ValidationError(f"{model.title} takes no prompt: the effect decides the motion.")
        _check_length("Prompt", prompt)
        inputs["prompt"] = prompt
    elif "prompt" in model.required:
        raise ValidationError(f"{model.title} needs a prompt describing the motion, e.g. 'a cat dances'.")
    if negative:
        if not model.takes("negative_prompt"):
            raise ValidationError(f"{model.title} takes no negative prompt.")
        _check_length("Negative prompt", negative)
        inputs["negative_prompt"] = negative
    if params.guidance is not None:
        if not model.takes("guidance_scale"):
            raise ValidationError(f"{model.title} takes no guidance setting.")
        if not GUIDANCE_MIN <= params.guidance <= GUIDANCE_MAX:
            raise ValidationError(
                f"Guidance must be between {GUIDANCE_MIN:g} and {GUIDANCE_MAX:g} "
                f"(got {params.guidance:g}); {GUIDANCE_DEFAULT:g} is the default."
            )
        inputs["guidance_scale"] = round(float(params.guidance), 2)
    if params.duration is not None:
        if not model.durations:
            raise ValidationError(f"{model.title} makes clips of a fixed length; leave out the duration.")
        if params.duration not in model.durations:
            allowed = " or ".join(str(d) for d in model.durations)
            raise ValidationError(f"Duration must be {allowed} seconds (got {params.duration}).")
    if model.durations:
        # The API wants the duration as a string: "5" or "10".
        inputs["duration"] = str(params.duration or model.default_duration)
    if params.has_end_image and not model.takes("end_image"):
        raise ValidationError("Only the 'master' model takes an end image.")
    if "audio" in model.required and not params.has_audio:
        raise ValidationError("The avatar model needs an audio clip or voice note to lip-sync to.")
    return inputs


def _check_length(label: str, text: str) -> None:
    if len(text) > PROMPT_MAX_CHARS:
        raise ValidationError(
            f"{label} is {len(text)} characters; the limit is {PROMPT_MAX_CHARS}."
        )
