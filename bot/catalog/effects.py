"""The 77 Kling effect scenes: the API's spellings, the names people type, search."""

from __future__ import annotations

import difflib

from bot import messages
from bot.catalog.model import ValidationError

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
