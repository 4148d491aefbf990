"""The Kling models served by WaveSpeed, as data: inputs, limits, names users type.

The five built-in models come from their model pages (``seed_models.json``); the rest
from WaveSpeed's live listing (``GET /api/v3/models``), read by ``listing``. A
``Catalog`` is the set on offer; the engine holds the current one. Code paths elsewhere
read these instead of special-casing model ids.
"""

from bot.catalog.checks import check_params, clip_seconds, params_of
from bot.catalog.effects import EFFECT_ALIASES, EFFECTS, effect_title, resolve_effect, search_effects, suggest_effects
from bot.catalog.listing import credits_for, fallback_credits
from bot.catalog.model import (
    GUIDANCE_DEFAULT,
    GUIDANCE_MAX,
    GUIDANCE_MIN,
    OPTION_FIELDS,
    PROMPT_MAX_CHARS,
    ImageRule,
    Kind,
    Model,
    Params,
    ValidationError,
)
from bot.catalog.offer import (
    BUILT_IN,
    DEFAULT_ANIMATE_MODEL,
    DEFAULT_CREDIT_USD,
    KINDS,
    Catalog,
    ModelChoice,
    build_catalog,
)

__all__ = [
    "BUILT_IN",
    "DEFAULT_ANIMATE_MODEL",
    "DEFAULT_CREDIT_USD",
    "EFFECTS",
    "EFFECT_ALIASES",
    "GUIDANCE_DEFAULT",
    "GUIDANCE_MAX",
    "GUIDANCE_MIN",
    "KINDS",
    "OPTION_FIELDS",
    "PROMPT_MAX_CHARS",
    "Catalog",
    "ImageRule",
    "Kind",
    "Model",
    "ModelChoice",
    "Params",
    "ValidationError",
    "build_catalog",
    "check_params",
    "clip_seconds",
    "credits_for",
    "effect_title",
    "fallback_credits",
    "params_of",
    "resolve_effect",
    "search_effects",
    "suggest_effects",
]
