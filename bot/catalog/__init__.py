"""The Kling models served by WaveSpeed, as data: inputs, limits, names users type.

Everything here comes from the model pages in ``shared/wavespeed/``. Code paths
elsewhere read these tables instead of special-casing model ids.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from bot import messages

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

def effect_title(name: str) -> str:
    """The name menus show for an effect (its API spelling stays what is sent)."""
    return messages.EFFECT_TITLES.get(name) or name.replace("_", " ").capitalize()


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
    cost: int = 1  # default credits per started 5 s of video ([costs] overrides it)

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
        cost=4,  # roughly in line with WaveSpeed's price: master costs about 4x standard
    ),
)

DEFAULT_ANIMATE_MODEL = "v2.1"


class ValidationError(ValueError):
    """A request the bot refuses before spending anything; str() is user-facing."""


# The lists every front end shows are computed from MODELS on each call, so a model
# added to the table appears in the CLI, the parsers, the help and Discord's choices.

def models_of(kind: Kind) -> list[Model]:
    return [m for m in MODELS if m.kind == kind]


def model_keys(kind: Kind) -> list[str]:
    """Short names users type for a kind, e.g. ["v1.6", "v2.1", "master"]."""
    return [m.key for m in models_of(kind)]


def durations_of(kind: Kind) -> list[int]:
    """Every clip length some model of a kind makes, shortest first."""
    return sorted({d for m in models_of(kind) for d in m.durations})


def models_taking(name: str) -> list[str]:
    return [m.key for m in MODELS if m.takes(name)]


def default_costs() -> dict[str, int]:
    """Credits per started 5 s of video for each model, before [costs] overrides."""
    return {m.key: m.cost for m in MODELS}


def animate_options() -> str:
    """The /animate text options, as help texts and refusals show them."""
    return messages.animate_options(model_keys("animate"), durations_of("animate"))


def model_by_id(model_id: str) -> Model:
    return next(m for m in MODELS if m.id == model_id)


def _by_name(name: str) -> Model | None:
    wanted = name.strip().lower()
    return next((m for m in MODELS
                 if wanted in (n.lower() for n in (m.key, m.id, *m.aliases))), None)


def resolve_model(name: str | None, kind: Kind) -> Model:
    """The model a user named (short name, alias or full id) for a command kind."""
    if not name:
        default = DEFAULT_ANIMATE_MODEL if kind == "animate" else models_of(kind)[0].key
        return next(m for m in MODELS if m.key == default)
    model = _by_name(name)
    if model is None or model.kind != kind:
        if len(models_of(kind)) == 1:  # "Choose one of: effects" would offer no choice
            raise ValidationError(messages.no_model_choice(kind, models_of(kind)[0].title))
        raise ValidationError(messages.unknown_model(name, model_keys(kind)))
    return model


# Apostrophes phones and keyboards type instead of the API's "'" (as in "let's_ride").
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})


def _normalise_effect(name: str) -> str:
    return "_".join(name.strip().lower().translate(_APOSTROPHES).replace("-", " ").replace("_", " ").split())


def resolve_effect(name: str) -> str:
    """The API's spelling of an effect a user typed, or a refusal with suggestions."""
    if not name or not name.strip():
        raise ValidationError(messages.EFFECT_MISSING)
    wanted = _normalise_effect(name)
    if wanted in EFFECTS:
        return wanted
    if wanted in EFFECT_ALIASES:
        return EFFECT_ALIASES[wanted]
    by_title = {_normalise_effect(effect_title(e)): e for e in EFFECTS}
    if wanted in by_title:
        return by_title[wanted]
    unquoted = {e.replace("'", ""): e for e in EFFECTS}
    if wanted.replace("'", "") in unquoted:
        return unquoted[wanted.replace("'", "")]
    hints = [effect_title(hint).lower() for hint in suggest_effects(wanted)]  # readable, as typed back
    raise ValidationError(messages.unknown_effect(name.strip(), hints, len(EFFECTS)))


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
    starts = [e for e in EFFECTS if e.startswith(wanted) or _normalise_effect(effect_title(e)).startswith(wanted)]
    contains = [e for e in EFFECTS if e not in starts and (wanted in e or wanted in _normalise_effect(effect_title(e)))]
    close = [e for e in suggest_effects(query, limit) if e not in starts + contains]
    return (starts + contains + close)[:limit]


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
            raise ValidationError(messages.takes_no_prompt(model.title))
        _check_length("Prompt", prompt)
        inputs["prompt"] = prompt
    elif "prompt" in model.required:
        raise ValidationError(messages.needs_prompt(model.title))
    if negative:
        if not model.takes("negative_prompt"):
            raise ValidationError(messages.takes_no_negative_prompt(model.title))
        _check_length("Negative prompt", negative)
        inputs["negative_prompt"] = negative
    if params.guidance is not None:
        if not model.takes("guidance_scale"):
            raise ValidationError(messages.takes_no_guidance(model.title))
        if not GUIDANCE_MIN <= params.guidance <= GUIDANCE_MAX:
            raise ValidationError(messages.guidance_range(
                GUIDANCE_MIN, GUIDANCE_MAX, GUIDANCE_DEFAULT, params.guidance))
        inputs["guidance_scale"] = round(float(params.guidance), 2)
    if params.duration is not None:
        if not model.durations:
            raise ValidationError(messages.fixed_length(model.title))
        if params.duration not in model.durations:
            raise ValidationError(messages.duration_choices(model.durations, params.duration))
    if model.durations:
        # The API wants the duration as a string: "5" or "10".
        inputs["duration"] = str(params.duration or model.default_duration)
    if params.has_end_image and not model.takes("end_image"):
        raise ValidationError(messages.end_image_only(models_taking("end_image")))
    if "audio" in model.required and not params.has_audio:
        raise ValidationError(messages.AVATAR_NEEDS_AUDIO)
    return inputs


def _check_length(label: str, text: str) -> None:
    if len(text) > PROMPT_MAX_CHARS:
        raise ValidationError(messages.text_too_long(label, len(text), PROMPT_MAX_CHARS))
