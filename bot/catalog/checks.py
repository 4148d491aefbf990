"""A request's options checked against one model: friendly refusals first, then the
model's own request schema; the result is the API inputs under the model's field names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot import messages
from bot.catalog import schema as schemas
from bot.catalog.effects import resolve_effect
from bot.catalog.model import (
    GUIDANCE_DEFAULT,
    GUIDANCE_MAX,
    GUIDANCE_MIN,
    PROMPT_MAX_CHARS,
    Model,
    Params,
    ValidationError,
)


def check_params(model: Model, params: Params, *, end_image_models: Sequence[str] = ()) -> dict[str, object]:
    """Validate params against a model; return the API inputs other than media.

    ``end_image_models`` names the models that do take an end image, for the refusal.
    """
    inputs: dict[str, object] = {}
    if model.kind == "effect":
        inputs[model.field("effect") or "effect_scene"] = resolve_effect(params.effect or "")
    _texts(model, params, inputs)
    if params.guidance is not None:
        _guidance(model, params.guidance, inputs)
    _duration(model, params.duration, inputs)
    if params.sound is not None:
        name = model.field("sound")
        if name is not None:
            inputs[name] = params.sound
        elif params.sound:  # silence is what a model without sound makes anyway
            raise ValidationError(messages.takes_no_sound(model.title))
    if params.aspect:
        aspect = params.aspect.strip()
        if not model.aspects:
            raise ValidationError(messages.takes_no_aspect(model.title))
        if aspect not in model.aspects:
            raise ValidationError(messages.aspect_choices(model.title, model.aspects, aspect))
        inputs[model.field("aspect") or "aspect_ratio"] = aspect
    end_field = model.field("end_image")
    if params.has_end_image and end_field is None:
        raise ValidationError(messages.end_image_only(end_image_models))
    if end_field in model.required and not params.has_end_image:
        raise ValidationError(messages.needs_end_image(model.title))
    if "audio" in model.required and not params.has_audio:
        raise ValidationError(messages.AVATAR_NEEDS_AUDIO)
    media = {"image": schemas.MEDIA_STAND_IN}
    if params.has_end_image and end_field:
        media[end_field] = schemas.MEDIA_STAND_IN
    if params.has_audio and model.takes("audio"):
        media["audio"] = schemas.MEDIA_STAND_IN
    schemas.check(model.schema, {**inputs, **media}, model.title)
    return inputs


def _texts(model: Model, params: Params, inputs: dict[str, object]) -> None:
    prompt = (params.prompt or "").strip()
    negative = (params.negative_prompt or "").strip()
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


def _guidance(model: Model, guidance: float, inputs: dict[str, object]) -> None:
    name = model.field("guidance")
    if name is None:
        raise ValidationError(messages.takes_no_guidance(model.title))
    low, high, default = schemas.number_range(model.schema, name, (GUIDANCE_MIN, GUIDANCE_MAX, GUIDANCE_DEFAULT))
    if not low <= guidance <= high:
        raise ValidationError(messages.guidance_range(low, high, default, guidance))
    inputs[name] = round(float(guidance), 2)


def _duration(model: Model, duration: int | None, inputs: dict[str, object]) -> None:
    if duration is not None:
        if not model.durations:
            raise ValidationError(messages.fixed_length(model.title))
        if duration not in model.durations:
            raise ValidationError(messages.duration_choices(model.durations, duration))
    if model.durations:  # always said, so the price quoted is the clip's
        seconds = duration or model.default_duration
        inputs[model.field("duration") or "duration"] = (
            str(seconds) if schemas.duration_as_text(model.schema) else seconds)


def _check_length(label: str, text: str) -> None:
    if len(text) > PROMPT_MAX_CHARS:
        raise ValidationError(messages.text_too_long(label, len(text), PROMPT_MAX_CHARS))


def clip_seconds(model: Model, inputs: dict[str, object]) -> int:
    """How long the clip of these inputs is (a fixed-length model's: 5 s)."""
    return int(str(inputs.get(model.field("duration") or "duration", 5)))


def params_of(model: Model, inputs: Mapping[str, object]) -> Params:
    """The options a job was made with, read back from its API inputs (for "again" buttons)."""

    def given(option: str) -> object:
        name = model.field(option)
        return inputs.get(name) if name else None

    guidance, duration, sound, aspect = given("guidance"), given("duration"), given("sound"), given("aspect")
    return Params(effect=str(inputs["effect_scene"]) if "effect_scene" in inputs else None,
                  prompt=str(inputs["prompt"]) if "prompt" in inputs else None,
                  negative_prompt=str(inputs["negative_prompt"]) if "negative_prompt" in inputs else None,
                  guidance=float(guidance) if isinstance(guidance, int | float) else None,
                  duration=int(str(duration)) if duration is not None and str(duration).isdigit() else None,
                  sound=sound if isinstance(sound, bool) else None,
                  aspect=str(aspect) if aspect else None)
