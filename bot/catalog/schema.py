"""A model's request schema (JSON Schema, as WaveSpeed publishes it): what it says about
durations, aspect ratios, image rules, and whether a request's inputs satisfy it."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from bot import messages
from bot.catalog.model import OPTION_FIELDS, ImageRule, ValidationError

LONGEST_RANGE = 60  # a duration range wider than this is not a list of choices anyone reads
MOST_CHOICES = 20  # an enum longer than this (from the listing) is cut: refusals and menus list them all
LONGEST_CHOICE = 20  # characters of one choice (an aspect ratio is "16:9")
DESCRIPTION_READ = 2000  # characters of a field's description searched for image rules

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
        return tuple(sorted({int(str(v)) for v in spec["enum"] if str(v).isdigit()}))  # "²": ValueError, skipped
    low, high = spec.get("minimum"), spec.get("maximum")
    if _finite(low) and _finite(high) and 0 < low <= high:  # Infinity or NaN (json reads them) is no bound
        return tuple(range(int(low), min(int(high), int(low) + LONGEST_RANGE) + 1))
    return ()


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def duration_as_text(schema: Mapping[str, Any] | None) -> bool:
    """Whether the API wants the duration as a string ("5") rather than a number."""
    spec = _spec(schema, "duration")
    values = spec.get("enum")
    return spec.get("type") == "string" or (isinstance(values, list) and any(isinstance(v, str) for v in values))


def choices(schema: Mapping[str, Any] | None, name: str) -> tuple[str, ...]:
    """A string field's enum, in the schema's order (its first MOST_CHOICES short strings)."""
    values = _spec(schema, name).get("enum")
    if not isinstance(values, list):
        return ()
    return tuple(v for v in values if isinstance(v, str) and 0 < len(v) <= LONGEST_CHOICE)[:MOST_CHOICES]


def _spec(schema: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    """A field's sub-schema, {} when it is none or not an object (``true`` is a valid JSON Schema)."""
    spec = properties(schema).get(name)
    return spec if isinstance(spec, Mapping) else {}


def number_range(schema: Mapping[str, Any] | None, name: str,
                 fallback: tuple[float, float, float]) -> tuple[float, float, float]:
    """(minimum, maximum, default) of a number field, each falling back to ``fallback``."""
    spec = _spec(schema, name)
    low, high, default = (spec.get(key) for key in ("minimum", "maximum", "default"))
    return tuple(float(v) if _finite(v) else f  # type: ignore[return-value]
                 for v, f in zip((low, high, default), fallback, strict=True))


# Bounded repeats: unbounded ones (\d+ then \s*) take quadratic time on a long run of digits.
_MEGABYTES = re.compile(r"(?<![0-9.])([0-9]{1,5}(?:\.[0-9]{1,3})?) {0,3}MB", re.IGNORECASE)
_PIXELS = re.compile(r"(?<![0-9])([0-9]{1,5}) {0,3}[*x×] {0,3}([0-9]{1,5}) {0,3}px", re.IGNORECASE)
_ASPECT = re.compile(r"1 {0,3}: {0,3}([0-9]{1,3}(?:\.[0-9]{1,3})?) {0,3}(?:~|to|and|-) {0,3}"
                     r"([0-9]{1,3}(?:\.[0-9]{1,3})?) {0,3}: {0,3}1")


def image_rule(schema: Mapping[str, Any] | None, name: str = "image") -> ImageRule:
    """The image rules a field's description states (10MB, 300*300px, 1:2.5 ~ 2.5:1), else the defaults."""
    text = str(_spec(schema, name).get("description", ""))[:DESCRIPTION_READ]
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
    validator = _without_patterns(jsonschema.validators.validator_for(schema, default=Draft202012Validator))(schema)
    error = best_match(validator.iter_errors(dict(inputs)))
    if error is None:
        return
    name = _field_of(error)
    raise ValidationError(messages.schema_refusal(title, _option_of(name), error.validator, error.validator_value))


@functools.cache
def _without_patterns(base: type[Validator]) -> type[Validator]:
    """A validator class that leaves ``pattern`` unchecked. Python's regex engine backtracks
    (``^(a+)+$`` on 40 a's and a "!" runs for hours) and holds the GIL while it does, so
    neither a thread nor a time limit would keep the event loop alive: the pattern is
    WaveSpeed's to enforce, and a submit it refuses is refunded."""
    lenient: type[Validator] = jsonschema.validators.extend(base, {"pattern": _unchecked})
    return lenient


def _unchecked(*_args: object) -> None:
    return None


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
