"""WaveSpeed's model listing (``GET /api/v3/models``) -> the Kling models that take a photo.

The five built-in entries come from ``seed_models.json`` (the same shape, from the model
pages) through the same code, plus the names and run times the bot has always used.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from bot.catalog import schema as schemas
from bot.catalog.model import Kind, Model

log = logging.getLogger(__name__)

SEED_FILE = Path(__file__).with_name("seed_models.json")
KLING_OWNER = "kwaivgi/"

# What the bot has always called the five seed models, and how long they tend to run.
SEED_NAMES: dict[str, tuple[str, str, tuple[str, ...], int]] = {
    "kwaivgi/kling-effects": ("effects", "Kling Effects", ("effect",), 90),
    "kwaivgi/kling-v1-ai-avatar-standard": ("avatar", "Kling v1 AI Avatar", ("ai-avatar",), 180),
    "kwaivgi/kling-v1.6-i2v-standard": ("v1.6", "Kling v1.6 standard", ("1.6", "v16"), 150),
    "kwaivgi/kling-v2.1-i2v-standard": ("v2.1", "Kling v2.1 standard", ("2.1", "v21"), 150),
    "kwaivgi/kling-v2.0-i2v-master": ("master", "Kling v2.0 master", ("v2.0", "2.0", "v2"), 240),
}
# The v2.1 page makes the prompt required and the image optional; the bot always sends
# a photo, so an image is required of every model here.
ALWAYS_REQUIRED = frozenset({"image"})
# A model id is a submit path: a Kling one, of the characters ids are made of, of a sane length
# (a listing's odd id must not reach a URL, a chat message or a Discord choice, at most 100 long).
_MODEL_ID = re.compile(r"(?=.{1,100}\Z)kwaivgi(?:/[A-Za-z0-9][A-Za-z0-9._-]*){1,3}", re.ASCII)
LONGEST_TITLE = 60  # characters of a listing's model name that messages show
# WaveSpeed lists about a hundred Kling models, each schema a few kB; checking one takes ~6 ms,
# so a listing of 50,000 (or a 20 MB schema) would keep a core busy for minutes at each refresh.
MOST_MODELS = 500
LONGEST_SCHEMA = 200_000


def credits_for(usd: Decimal, credit_usd: Decimal) -> int:
    """Whole credits for a price: rounded up, in decimal (0.75 at 0.25 a credit is exactly 3)."""
    if usd <= 0:
        return 0
    return int((usd / credit_usd).to_integral_value(rounding="ROUND_CEILING"))


def seed_listing() -> list[dict[str, Any]]:
    return list(json.loads(SEED_FILE.read_text(encoding="utf-8")))


def request_schema(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The request schema of a listing entry's run endpoint (the first one that has one)."""
    api = entry.get("api_schema")
    runs = api.get("api_schemas") if isinstance(api, Mapping) else None
    for run in runs if isinstance(runs, list) else []:
        found = run.get("request_schema") if isinstance(run, Mapping) else None
        if isinstance(found, Mapping) and isinstance(found.get("properties"), Mapping):
            return found
    return None


@functools.lru_cache(maxsize=4096)
def _check_schema(text: str) -> None:
    """SchemaError unless ``text`` is a valid JSON Schema (slow, ~10 ms: each schema checked once)."""
    schema = json.loads(text)
    validator_for(schema, default=Draft202012Validator).check_schema(schema)


def short_key(model_id: str) -> str:
    """A name people can type: ``kwaivgi/kling-v3.0-pro/image-to-video`` -> ``v3.0-pro``."""
    name = model_id.removeprefix(KLING_OWNER).removeprefix("kling-").removeprefix("video-")
    name = re.sub(r"[/-]image-to-video$", "", name).replace("/", "-").replace("i2v-", "")
    return name.replace("standard", "std").replace("-ai-avatar", "-avatar")


def model_of(entry: Mapping[str, Any], credit_usd: Decimal) -> Model | None:
    """The catalog entry for a listing entry, or None when it is not a Kling model taking a photo."""
    model_id = entry.get("model_id")
    request = request_schema(entry)
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id) or request is None:
        return None
    fields = schemas.properties(request)
    if "image" not in fields or "video" in fields:  # text-to-video, video-to-video, lip-sync of a video
        return None
    # A schema that is not valid JSON Schema would fail every request's check: refused here, once.
    text = json.dumps(request, sort_keys=True, default=str)
    if len(text) > LONGEST_SCHEMA:
        raise ValueError(f"its request schema is {len(text)} characters long")
    _check_schema(text)
    kind: Kind = "effect" if "effect_scene" in fields else "avatar" if "audio" in fields else "animate"
    base = _usd(entry.get("base_price"))
    key, title, aliases, expected = SEED_NAMES.get(
        model_id, (short_key(model_id), _title(entry.get("name"), model_id), (), 180))
    durations = schemas.durations(request)
    model = Model(
        key=key, id=model_id, kind=kind, title=title,
        aliases=(*aliases, model_id.removeprefix(KLING_OWNER)),
        inputs=tuple(fields), required=schemas.required(request) | ALWAYS_REQUIRED, durations=durations,
        image=schemas.image_rule(request), expected_seconds=expected,
        cost=max(1, credits_for(base, credit_usd)) if base is not None else 1,
        schema=request, aspects=schemas.choices(request, "aspect_ratio"), base_usd=base)
    return replace(model, features=features_of(model, str(entry.get("description", ""))))


def _title(name: object, model_id: str) -> str:
    """A listing's model name as messages show it: plain words, not markup, not a page long."""
    words = " ".join(re.sub(r"[<>*_`~|\\\[\]]", " ", str(name or "")).split())
    return words[:LONGEST_TITLE].strip() or short_key(model_id)


def features_of(model: Model, description: str) -> tuple[str, ...]:
    """What a model adds, for /models: sound, an end frame, 1080p, long clips, aspect ratios."""
    found: list[str] = []
    if model.takes("sound"):
        found.append("sound")
    if "1080p" in description or any(tier in model.key.split("-") for tier in ("pro", "master")):
        found.append("1080p")
    if model.takes("end_image"):
        found.append("end frame")
    if model.aspects:
        found.append("aspect " + "/".join(model.aspects))
    if model.durations and model.durations[-1] > 10:
        found.append(f"up to {model.durations[-1]} s")
    return tuple(found)


def models_of_listing(listing: Iterable[Any], credit_usd: Decimal) -> list[Model]:
    """The photo-taking Kling models of a listing, in its order (entries it cannot read skipped)."""
    found: dict[str, Model] = {}
    for entry in listing:
        try:
            model = model_of(entry, credit_usd) if isinstance(entry, Mapping) else None
        except (TypeError, ValueError, AttributeError, LookupError, ArithmeticError, SchemaError) as err:
            # its fields have wrong types, or numbers no clip has (Infinity): one short line, not the schema
            reason = err.message if isinstance(err, SchemaError) else str(err)
            log.warning("model list entry %r skipped: %s", str(entry.get("model_id"))[:100], reason[:200])
            continue
        if model is not None and model.id not in found:
            found[model.id] = model
            if len(found) == MOST_MODELS:
                log.warning("the model list has %d Kling photo models or more; any more are left out", MOST_MODELS)
                break
    return list(found.values())


def differences(built_in: Model, live: Model) -> list[str]:
    """Where a live entry disagrees with the built-in one (empty: it may replace it)."""
    said: list[str] = []
    if missing := set(built_in.inputs) - set(live.inputs):
        said.append(f"inputs gone {sorted(missing)}")
    if extra := live.required - built_in.required:
        said.append(f"required now {sorted(extra)}")
    if built_in.durations != live.durations:
        said.append(f"durations {list(built_in.durations)} -> {list(live.durations)}")
    if built_in.kind != live.kind:
        said.append(f"kind {built_in.kind} -> {live.kind}")
    return said


def merged(seeds: Sequence[Model], live: Sequence[Model]) -> list[Model]:
    """Seeds, each replaced by its live entry where the two agree; then the other live models."""
    by_id = {model.id: model for model in live}
    out: list[Model] = []
    for seed in seeds:
        other = by_id.pop(seed.id, None)
        if other is None:
            out.append(seed)
        elif said := differences(seed, other):
            log.warning("model %s: the live schema differs from the built-in one (%s); keeping the built-in",
                        seed.id, "; ".join(said))
            out.append(seed)
        else:
            out.append(other)
    return out + list(by_id.values())


def _usd(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        usd = Decimal(str(value))
    except InvalidOperation:
        return None
    return usd if usd.is_finite() and usd > 0 else None


def version_of(model: Model) -> tuple[float, ...]:
    """``v3.0-pro`` -> (3.0,): how new a v-series model is; () for others (O1, O3, effects)."""
    found = re.match(r"v(\d+(?:\.\d+)?)", model.key)
    return (float(found.group(1)),) if found else ()


def tier_of(model: Model) -> str | None:
    parts = model.key.split("-")
    return next((tier for tier in ("master", "pro", "std") if tier in parts), None)


def newest_per_tier(models: Sequence[Model]) -> list[Model]:
    """The newest plain image-to-video model of each tier (std, pro, master) of the v-series."""
    best: dict[str, Model] = {}
    for model in models:
        tier = tier_of(model)
        plain = model.kind == "animate" and "end_image" not in model.required and "turbo" not in model.key
        if tier and plain and version_of(model) and (
                tier not in best or version_of(model) > version_of(best[tier])):
            best[tier] = model
    return list(best.values())


def fallback_credits(model: Model, seconds: float) -> int:
    """Credits when no quote is known: the catalog's cost per started 5 s, never zero."""
    return max(1, model.cost) * max(1, math.ceil(seconds / 5))
