"""A model's request schema (JSON Schema, as WaveSpeed publishes it): what it says about
durations, aspect ratios, image rules, and whether a request's inputs satisfy it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from bot import messages
from bot.catalog.model import OPTION_FIELDS, ImageRule, ValidationError

LONGEST_RANGE = 60  # a duration range wider than this is not a list of choices anyone reads

# Media inputs are checked by the bot itself (bot.media); the schema sees a stand-in URL.
MEDIA_FIELDS = ("image", "audio", *OPTION_FIELDS["end_image"])
MEDIA_STAND_IN = "https://media.invalid/input"


def properties(schema: Mapping[str, Any] | None) -> Mapping[str, Any]:
    found = (schema or {}).get("properties")
    return found if isinstance(found, Mapping) else {}


def required(schema: Mapping[str, Any] | None) -> frozenset[str]:
    found = (schema or {}).get("required")
    return frozenset(name for name in found if isinstance(name, str)) if isinstance(found, list) else frozenset()


def durations(schema: Mapping[str, Any] | None) -> tuple[int, ...]:
    """The clip lengths a schema's ``duration`` allows: its enum, or its integer range."""
    spec = properties(schema).get("duration")
    if not isinstance(spec, Mapping):
        return ()
    if isinstance(spec.get("enum"), list):
        return tuple(sorted({int(str(v)) for v in spec["enum"] if str(v).isdigit()}))
    low, high = spec.get("minimum"), spec.get("maximum")
    if isinstance(low, int | float) and isinstance(high, int | float) and 0 < low <= high:
        return tuple(range(int(low), min(int(high), int(low) + LONGEST_RANGE) + 1))
    return ()


def duration_as_text(schema: Mapping[str, Any] | None) -> bool:
    """Whether the API wants the duration as a string ("5") rather than a number."""
    spec = properties(schema).get("duration", {})
    return spec.get("type") == "string" or any(isinstance(v, str) for v in spec.get("enum", []))


def choices(schema: Mapping[str, Any] | None, name: str) -> tuple[str, ...]:
    """A string field's enum, in the schema's order."""
    spec = properties(schema).get(name, {})
    values = spec.get("enum") if isinstance(spec, Mapping) else None
    return tuple(str(v) for v in values) if isinstance(values, list) else ()


def number_range(schema: Mapping[str, Any] | None, name: str,
                 fallback: tuple[float, float, float]) -> tuple[float, float, float]:
    """(minimum, maximum, default) of a number field, each falling back to ``fallback``."""
    spec = properties(schema).get(name, {})
    low, high, default = (spec.get(key) for key in ("minimum", "maximum", "default"))
    return tuple(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else f  # type: ignore[return-value]
                 for v, f in zip((low, high, default), fallback, strict=True))


_MEGABYTES = re.compile(r"(\d+(?:\.\d+)?)\s*MB", re.IGNORECASE)
_PIXELS = re.compile(r"(\d+)\s*[*x×]\s*(\d+)\s*px", re.IGNORECASE)
_ASPECT = re.compile(r"1\s*:\s*(\d+(?:\.\d+)?)\s*(?:~|to|and|-)\s*(\d+(?:\.\d+)?)\s*:\s*1")


def image_rule(schema: Mapping[str, Any] | None, name: str = "image") -> ImageRule:
    """The image rules a field's description states (10MB, 300*300px, 1:2.5 ~ 2.5:1), else the defaults."""
    spec = properties(schema).get(name, {})
    text = str(spec.get("description", "")) if isinstance(spec, Mapping) else ""
    rule = ImageRule()
    size = _MEGABYTES.search(text)
    pixels = _PIXELS.search(text)
    aspect = _ASPECT.search(text)
    return ImageRule(
        min_side=min(int(pixels.group(1)), int(pixels.group(2))) if pixels else rule.min_side,
        max_bytes=int(float(size.group(1)) * 1024 * 1024) if size else rule.max_bytes,
        aspect=(1 / float(aspect.group(1)), float(aspect.group(2))) if aspect else None)


def check(schema: Mapping[str, Any] | None, inputs: Mapping[str, Any], title: str) -> None:
    """Refuse ``inputs`` the schema forbids (media stand in as URLs), in the chat's words."""
    if not schema:
        return
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = best_match(validator.iter_errors(dict(inputs)))
    if error is None:
        return
    name = _field_of(error)
    raise ValidationError(messages.schema_refusal(title, _option_of(name), error.validator, error.validator_value))


def _field_of(error: jsonschema.ValidationError) -> str:
    if error.validator == "required" and isinstance(error.validator_value, list):
        missing = [n for n in error.validator_value if n not in (error.instance or {})]
        return str(missing[0]) if missing else ""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        extra = [n for n in error.instance if n not in (error.schema.get("properties") or {})]
        return str(extra[0]) if extra else ""
    return str(error.path[0]) if error.path else ""


def _option_of(name: str) -> str:
    """The chat's option name for an API field (``cfg_scale`` -> ``guidance``)."""
    return next((option for option, names in OPTION_FIELDS.items() if name in names), name)
